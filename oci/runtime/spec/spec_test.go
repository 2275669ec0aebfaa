package spec

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	testPasswd = "root:x:0:0:root:/root:/bin/sh\n" +
		"alice:x:1000:1000:Alice:/home/alice:/bin/sh\n" +
		"bob:x:1001:1001::/home/bob:/bin/sh\n"
	testGroup = "root:x:0:\n" +
		"alice:x:1000:\n" +
		"bob:x:1001:\n" +
		"staff:x:50:alice,bob\n" +
		"wheel:x:10:alice\n"
)

// fakeRootfs makes a rootfs with the given files (path => content).
func fakeRootfs(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func baseInput(t *testing.T) Input {
	t.Helper()
	return Input{
		ID:         "c1",
		Config:     &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}},
		Pod:        &runtimeapi.PodSandboxConfig{Hostname: "podhost"},
		Image:      ocispec.ImageConfig{Entrypoint: []string{"/entry"}, Cmd: []string{"cmd"}},
		RootfsPath: fakeRootfs(t, map[string]string{"etc/passwd": testPasswd, "etc/group": testGroup}),
	}
}

// linux returns cfg's security context, creating it.
func linux(cfg *runtimeapi.ContainerConfig) *runtimeapi.LinuxContainerSecurityContext {
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxContainerConfig{}
	}
	if cfg.Linux.SecurityContext == nil {
		cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{}
	}
	return cfg.Linux.SecurityContext
}

func generate(t *testing.T, in Input) *specs.Spec {
	t.Helper()
	s, err := Generate(in)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return s
}

// wantInvalid checks err is InvalidArgument naming field.
func wantInvalid(t *testing.T, err error, field string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want InvalidArgument naming %s", field)
	}
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), field) {
		t.Fatalf("error %q: want InvalidArgument naming %s", err, field)
	}
}

// generateCase makes the spec of a table case: nil when the case expects
// InvalidArgument naming errField (and got it).
func generateCase(t *testing.T, in Input, errField string) *specs.Spec {
	t.Helper()
	s, err := Generate(in)
	if errField != "" {
		wantInvalid(t, err, errField)
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCommand(t *testing.T) {
	for _, tc := range []struct {
		name          string
		entry, cmd    []string
		command, args []string
		want          []string
	}{
		{"neither", []string{"/entry", "-x"}, []string{"run"}, nil, nil, []string{"/entry", "-x", "run"}},
		{"command only drops CMD", []string{"/entry"}, []string{"run"}, []string{"/bin/sh"}, nil, []string{"/bin/sh"}},
		{"args only keep ENTRYPOINT", []string{"/entry"}, []string{"run"}, nil, []string{"a", "b"}, []string{"/entry", "a", "b"}},
		{"both", []string{"/entry"}, []string{"run"}, []string{"/bin/sh"}, []string{"-c", "x"}, []string{"/bin/sh", "-c", "x"}},
		{"image CMD only", nil, []string{"/bin/app", "serve"}, nil, nil, []string{"/bin/app", "serve"}},
		{"image CMD only, args", nil, []string{"/bin/app"}, nil, []string{"/bin/other"}, []string{"/bin/other"}},
		{"image ENTRYPOINT only", []string{"/entry"}, nil, nil, nil, []string{"/entry"}},
		{"empty image, command", nil, nil, []string{"/x"}, []string{"y"}, []string{"/x", "y"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput(t)
			in.Image.Entrypoint, in.Image.Cmd = tc.entry, tc.cmd
			in.Config.Command, in.Config.Args = tc.command, tc.args
			if got := generate(t, in).Process.Args; !slices.Equal(got, tc.want) {
				t.Errorf("args %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("nothing to run", func(t *testing.T) {
		in := baseInput(t)
		in.Image.Entrypoint, in.Image.Cmd = nil, nil
		_, err := Generate(in)
		wantInvalid(t, err, "config.command")
	})
}

func TestEnv(t *testing.T) {
	kv := func(k, v string) *runtimeapi.KeyValue { return &runtimeapi.KeyValue{Key: k, Value: []byte(v)} }
	for _, tc := range []struct {
		name     string
		image    []string
		envs     []*runtimeapi.KeyValue
		hostname string
		want     []string
	}{
		{
			name:     "merge keeps image order",
			image:    []string{"PATH=/bin", "A=1", "B=2"},
			envs:     []*runtimeapi.KeyValue{kv("B", "x"), kv("C", "3"), kv("A", "y=z")},
			hostname: "h",
			want:     []string{"PATH=/bin", "A=y=z", "B=x", "C=3", "HOSTNAME=h", "HOME=/root"},
		},
		{
			name:     "defaults",
			hostname: "h",
			want:     []string{"PATH=" + DefaultPath, "HOSTNAME=h", "HOME=/root"},
		},
		{
			name:     "given HOSTNAME and HOME stay",
			image:    []string{"HOME=/srv"},
			envs:     []*runtimeapi.KeyValue{kv("HOSTNAME", "mine"), kv("PATH", "/x")},
			hostname: "h",
			want:     []string{"HOME=/srv", "HOSTNAME=mine", "PATH=/x"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput(t)
			in.Image.Env, in.Config.Envs, in.Pod.Hostname = tc.image, tc.envs, tc.hostname
			if got := generate(t, in).Process.Env; !slices.Equal(got, tc.want) {
				t.Errorf("env %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("empty key", func(t *testing.T) {
		in := baseInput(t)
		in.Config.Envs = []*runtimeapi.KeyValue{kv("A", "1"), kv("", "x")}
		_, err := Generate(in)
		wantInvalid(t, err, "config.envs[1].key")
	})
}

func TestWorkingDir(t *testing.T) {
	for _, tc := range []struct {
		name, config, image, want, errField string
	}{
		{name: "config wins", config: "/app", image: "/img", want: "/app"},
		{name: "image", image: "/img/", want: "/img"},
		{name: "default", want: "/"},
		{name: "relative config", config: "app", errField: "config.working_dir"},
		{name: "relative image", image: "img", errField: "WorkingDir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput(t)
			in.Config.WorkingDir, in.Image.WorkingDir = tc.config, tc.image
			s := generateCase(t, in, tc.errField)
			if s == nil {
				return
			}
			if s.Process.Cwd != tc.want {
				t.Errorf("cwd %q, want %q", s.Process.Cwd, tc.want)
			}
		})
	}
}

func TestUser(t *testing.T) {
	i64 := func(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }
	for _, tc := range []struct {
		name      string
		image     string
		sc        *runtimeapi.LinuxContainerSecurityContext
		rootfs    map[string]string // nil: the standard one
		want      specs.User
		wantHome  string
		errField  string
		errNotInv bool
	}{
		{name: "default root", want: specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0}}, wantHome: "/root"},
		{name: "image name", image: "alice", want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 50, 10}}, wantHome: "/home/alice"},
		{name: "image uid", image: "1001", want: specs.User{UID: 1001, GID: 1001, AdditionalGids: []uint32{1001, 50}}, wantHome: "/home/bob"},
		{name: "image uid not in passwd", image: "4242", want: specs.User{UID: 4242, GID: 0, AdditionalGids: []uint32{0}}},
		{name: "image uid:gid", image: "1000:77", want: specs.User{UID: 1000, GID: 77, AdditionalGids: []uint32{77, 50, 10}}},
		{name: "image user:group", image: "bob:staff", want: specs.User{UID: 1001, GID: 50, AdditionalGids: []uint32{50}}},
		{name: "image unknown user", image: "mallory", errField: "User"},
		{name: "image unknown group", image: "alice:nogroup", errField: "User"},
		{
			name: "run_as_user overrides image", image: "alice",
			sc:   &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1001)},
			want: specs.User{UID: 1001, GID: 1001, AdditionalGids: []uint32{1001, 50}},
		},
		{
			name: "run_as_username and group",
			sc:   &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "alice", RunAsGroup: i64(3000)},
			want: specs.User{UID: 1000, GID: 3000, AdditionalGids: []uint32{3000, 50, 10}},
		},
		{
			name: "supplemental groups merged",
			sc:   &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000), SupplementalGroups: []int64{2000, 50}},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 50, 10, 2000}},
		},
		{
			name: "strict policy ignores /etc/group",
			sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000), SupplementalGroups: []int64{2000},
				SupplementalGroupsPolicy: runtimeapi.SupplementalGroupsPolicy_Strict},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 2000}},
		},
		{
			name:     "run_as_username unknown",
			sc:       &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "mallory"},
			errField: "config.linux.security_context.run_as_username",
		},
		{
			name:     "run_as_group without user",
			image:    "alice",
			sc:       &runtimeapi.LinuxContainerSecurityContext{RunAsGroup: i64(5)},
			errField: "config.linux.security_context.run_as_group",
		},
		{
			name:     "negative run_as_user",
			sc:       &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(-1)},
			errField: "config.linux.security_context.run_as_user",
		},
		{
			name:     "no /etc/passwd, numeric ids",
			image:    "1234:5678",
			rootfs:   map[string]string{"bin/sh": ""},
			want:     specs.User{UID: 1234, GID: 5678, AdditionalGids: []uint32{5678}},
			wantHome: "",
		},
		{
			name:     "no /etc/passwd, name",
			image:    "alice",
			rootfs:   map[string]string{"bin/sh": ""},
			errField: "User",
		},
		{
			// /etc/passwd -> /real/passwd must be read inside the rootfs,
			// not from the host (which has no "zed").
			name:  "absolute symlink resolved in rootfs",
			image: "zed",
			rootfs: map[string]string{
				"real/passwd": "zed:x:777:778::/home/zed:/bin/sh\n",
				"real/group":  "zed:x:778:\nops:x:900:zed\n",
			},
			want:     specs.User{UID: 777, GID: 778, AdditionalGids: []uint32{778, 900}},
			wantHome: "/home/zed",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput(t)
			if tc.rootfs != nil {
				in.RootfsPath = fakeRootfs(t, tc.rootfs)
				if _, ok := tc.rootfs["real/passwd"]; ok {
					for _, f := range []string{"passwd", "group"} {
						if err := os.MkdirAll(filepath.Join(in.RootfsPath, "etc"), 0o755); err != nil {
							t.Fatal(err)
						}
						// Absolute targets: on the host these would be the host's files.
						if err := os.Symlink("/real/"+f, filepath.Join(in.RootfsPath, "etc", f)); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			in.Image.User = tc.image
			if tc.sc != nil {
				in.Config.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: tc.sc}
			}
			s := generateCase(t, in, tc.errField)
			if s == nil {
				return
			}
			got := s.Process.User
			if got.UID != tc.want.UID || got.GID != tc.want.GID || !slices.Equal(got.AdditionalGids, tc.want.AdditionalGids) {
				t.Errorf("user %+v, want %+v", got, tc.want)
			}
			if tc.wantHome != "" && !slices.Contains(s.Process.Env, "HOME="+tc.wantHome) {
				t.Errorf("env %q: want HOME=%s", s.Process.Env, tc.wantHome)
			}
		})
	}
	t.Run("symlink escaping to a host file", func(t *testing.T) {
		// /etc/passwd -> ../../../../etc/passwd stays in the rootfs, where
		// it is the rootfs's own /etc/passwd: itself, a loop, not the host's.
		in := baseInput(t)
		in.RootfsPath = fakeRootfs(t, map[string]string{"bin/sh": ""})
		if err := os.MkdirAll(filepath.Join(in.RootfsPath, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../../../../../../../../etc/passwd", filepath.Join(in.RootfsPath, "etc", "passwd")); err != nil {
			t.Fatal(err)
		}
		in.Image.User = "root" // in the host's /etc/passwd, but must not be found
		if _, err := Generate(in); err == nil {
			t.Fatal("user resolved through a symlink out of the rootfs")
		}
	})
}

func mountDsts(ms []specs.Mount) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Destination)
	}
	return out
}

func findMount(ms []specs.Mount, dst string) *specs.Mount {
	for i := range ms {
		if ms[i].Destination == dst {
			return &ms[i]
		}
	}
	return nil
}

func TestMounts(t *testing.T) {
	host := t.TempDir()
	vol := filepath.Join(host, "vol")
	sub := filepath.Join(host, "vol", "sub")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(host, "link")
	if err := os.Symlink(vol, link); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(host, "hosts")
	if err := os.WriteFile(hosts, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	defaults := []string{"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/dev/shm", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"}
	m := func(dst, src string) *runtimeapi.Mount { return &runtimeapi.Mount{ContainerPath: dst, HostPath: src} }

	for _, tc := range []struct {
		name        string
		mounts      []*runtimeapi.Mount
		readonly    bool
		shm         string
		wantDsts    []string
		check       func(t *testing.T, s *specs.Spec)
		errField    string
		errNotFound bool
	}{
		{
			name:     "defaults only",
			wantDsts: defaults,
			check: func(t *testing.T, s *specs.Spec) {
				if m := findMount(s.Mounts, "/dev/shm"); m.Type != "tmpfs" || !slices.Contains(m.Options, "size=65536k") {
					t.Errorf("/dev/shm %+v: want own 64MiB tmpfs", m)
				}
				if m := findMount(s.Mounts, "/sys"); !slices.Contains(m.Options, "ro") {
					t.Errorf("/sys %+v: want ro", m)
				}
				if m := findMount(s.Mounts, "/etc/hosts"); m.Source != hosts || !slices.Equal(m.Options, []string{"rbind", "rprivate", "rw"}) {
					t.Errorf("/etc/hosts %+v", m)
				}
				if s.Linux.RootfsPropagation != "" {
					t.Errorf("rootfs propagation %q", s.Linux.RootfsPropagation)
				}
			},
		},
		{
			name:     "pod shm and readonly rootfs",
			shm:      host,
			readonly: true,
			wantDsts: defaults,
			check: func(t *testing.T, s *specs.Spec) {
				if m := findMount(s.Mounts, "/dev/shm"); m.Type != "bind" || m.Source != host {
					t.Errorf("/dev/shm %+v: want the pod's", m)
				}
				for _, f := range []string{"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"} {
					if m := findMount(s.Mounts, f); !slices.Contains(m.Options, "ro") {
						t.Errorf("%s %+v: want ro", f, m)
					}
				}
				if !s.Root.Readonly {
					t.Error("root not readonly")
				}
			},
		},
		{
			name: "CRI mounts after defaults, parents first, options",
			mounts: []*runtimeapi.Mount{
				{ContainerPath: "/data/sub", HostPath: sub, Readonly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
				{ContainerPath: "/data", HostPath: vol},
				{ContainerPath: "/shared", HostPath: vol, Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL, MountOptions: []string{"noexec"}},
			},
			wantDsts: append(slices.Clone(defaults), "/data", "/shared", "/data/sub"),
			check: func(t *testing.T, s *specs.Spec) {
				for dst, want := range map[string][]string{
					"/data/sub": {"rbind", "rslave", "ro"},
					"/data":     {"rbind", "rprivate", "rw"},
					"/shared":   {"rbind", "rshared", "rw", "noexec"},
				} {
					if m := findMount(s.Mounts, dst); m.Type != "bind" || !slices.Equal(m.Options, want) {
						t.Errorf("%s: %+v, want options %q", dst, m, want)
					}
				}
				if s.Linux.RootfsPropagation != "rshared" {
					t.Errorf("rootfs propagation %q, want rshared", s.Linux.RootfsPropagation)
				}
			},
		},
		{
			name:     "recursive read-only",
			mounts:   []*runtimeapi.Mount{{ContainerPath: "/ro", HostPath: vol, Readonly: true, RecursiveReadOnly: true}},
			wantDsts: append(slices.Clone(defaults), "/ro"),
			check: func(t *testing.T, s *specs.Spec) {
				if m := findMount(s.Mounts, "/ro"); !slices.Equal(m.Options, []string{"rbind", "rprivate", "ro", "rro"}) {
					t.Errorf("/ro %+v", m)
				}
			},
		},
		{
			name:     "recursive read-only needs readonly",
			mounts:   []*runtimeapi.Mount{{ContainerPath: "/ro", HostPath: vol, RecursiveReadOnly: true}},
			errField: "config.mounts[0].recursive_read_only",
		},
		{
			name:     "CRI mount replaces defaults at and below it",
			mounts:   []*runtimeapi.Mount{m("/etc/hosts", hosts), m("/dev", vol)},
			wantDsts: []string{"/proc", "/sys", "/sys/fs/cgroup", "/etc/hostname", "/etc/resolv.conf", "/dev", "/etc/hosts"},
			check: func(t *testing.T, s *specs.Spec) {
				if m := findMount(s.Mounts, "/dev"); m.Source != vol {
					t.Errorf("/dev %+v: want the CRI one", m)
				}
			},
		},
		{
			name:     "symlinked host path is resolved",
			mounts:   []*runtimeapi.Mount{m("/data/", link)},
			wantDsts: append(slices.Clone(defaults), "/data"),
			check: func(t *testing.T, s *specs.Spec) {
				if m := findMount(s.Mounts, "/data"); m.Source != vol {
					t.Errorf("/data source %q, want %q", m.Source, vol)
				}
			},
		},
		{name: "relative container path", mounts: []*runtimeapi.Mount{m("/ok", vol), m("data", vol)}, errField: "config.mounts[1].container_path"},
		{name: "dotdot container path", mounts: []*runtimeapi.Mount{m("/a/../etc", vol)}, errField: "config.mounts[0].container_path"},
		{name: "root container path", mounts: []*runtimeapi.Mount{m("/", vol)}, errField: "config.mounts[0].container_path"},
		{name: "duplicate container path", mounts: []*runtimeapi.Mount{m("/a", vol), m("/a/", vol)}, errField: "config.mounts[1].container_path"},
		{name: "missing host path", mounts: []*runtimeapi.Mount{m("/a", filepath.Join(host, "nope"))}, errField: "config.mounts[0].host_path"},
		{name: "relative host path", mounts: []*runtimeapi.Mount{m("/a", "vol")}, errField: "config.mounts[0].host_path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput(t)
			in.HostnamePath, in.HostsPath, in.ResolvConfPath = hosts+"name", hosts, hosts+".resolv"
			in.ShmPath = tc.shm
			in.Config.Mounts = tc.mounts
			linux(in.Config).ReadonlyRootfs = tc.readonly
			s := generateCase(t, in, tc.errField)
			if s == nil {
				return
			}
			if got := mountDsts(s.Mounts); !slices.Equal(got, tc.wantDsts) {
				t.Errorf("mounts %q,\nwant %q", got, tc.wantDsts)
			}
			if tc.check != nil {
				tc.check(t, s)
			}
		})
	}
	t.Run("missing host path is not created", func(t *testing.T) {
		in := baseInput(t)
		p := filepath.Join(host, "absent")
		in.Config.Mounts = []*runtimeapi.Mount{m("/a", p)}
		_, _ = Generate(in)
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it still missing", p, err)
		}
	})
	t.Run("no pod files", func(t *testing.T) {
		s := generate(t, baseInput(t))
		if got := mountDsts(s.Mounts); !slices.Equal(got, defaults[:7]) {
			t.Errorf("mounts %q, want %q", got, defaults[:7])
		}
	})
}
