package spec

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestCapabilities(t *testing.T) {
	with := func(extra ...string) []string { return append(slices.Clone(DefaultCapabilities), extra...) }
	without := func(drop ...string) []string {
		return slices.DeleteFunc(slices.Clone(DefaultCapabilities), func(c string) bool { return slices.Contains(drop, c) })
	}
	all := allCapabilities()
	for _, tc := range []struct {
		name          string
		caps          *runtimeapi.Capability
		want, ambient []string
		errField      string
	}{
		{name: "default", want: DefaultCapabilities},
		{name: "add", caps: &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN", "cap_sys_time", "CHOWN"}}, want: with("CAP_NET_ADMIN", "CAP_SYS_TIME")},
		{name: "drop", caps: &runtimeapi.Capability{DropCapabilities: []string{"NET_RAW", "CAP_MKNOD"}}, want: without("CAP_NET_RAW", "CAP_MKNOD")},
		{name: "add ALL drop one", caps: &runtimeapi.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"SYS_ADMIN"}},
			want: slices.DeleteFunc(slices.Clone(all), func(c string) bool { return c == "CAP_SYS_ADMIN" })},
		{name: "drop ALL add one", caps: &runtimeapi.Capability{AddCapabilities: []string{"NET_BIND_SERVICE"}, DropCapabilities: []string{"all"}}, want: []string{"CAP_NET_BIND_SERVICE"}},
		{name: "drop ALL", caps: &runtimeapi.Capability{DropCapabilities: []string{"ALL"}}, want: []string{}},
		{name: "ambient", caps: &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}, AddAmbientCapabilities: []string{"NET_ADMIN", "NET_BIND_SERVICE"}},
			want: with("CAP_NET_ADMIN"), ambient: []string{"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"}},
		{name: "ambient not permitted", caps: &runtimeapi.Capability{AddAmbientCapabilities: []string{"SYS_ADMIN"}},
			errField: "capabilities.add_ambient_capabilities[0]"},
		{name: "unknown add", caps: &runtimeapi.Capability{AddCapabilities: []string{"CHOWN", "FLY"}}, errField: "capabilities.add_capabilities[1]"},
		{name: "unknown drop", caps: &runtimeapi.Capability{DropCapabilities: []string{"CAP_NOPE"}}, errField: "capabilities.drop_capabilities[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput(t)
			linux(in.Config).Capabilities = tc.caps
			s := generateCase(t, in, tc.errField)
			if s == nil {
				return
			}
			c := s.Process.Capabilities
			for name, got := range map[string][]string{"bounding": c.Bounding, "effective": c.Effective, "permitted": c.Permitted} {
				if !slices.Equal(sorted(got), sorted(tc.want)) {
					t.Errorf("%s %q, want %q", name, got, tc.want)
				}
			}
			if !slices.Equal(c.Ambient, tc.ambient) || !slices.Equal(c.Inheritable, append([]string{}, tc.ambient...)) {
				t.Errorf("ambient %q inheritable %q, want both %q", c.Ambient, c.Inheritable, tc.ambient)
			}
		})
	}
}

func TestPrivileged(t *testing.T) {
	in := baseInput(t)
	sc := linux(in.Config)
	sc.Privileged = true
	sc.Capabilities = &runtimeapi.Capability{DropCapabilities: []string{"ALL"}}
	sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	sc.MaskedPaths = []string{"/proc/kcore"}
	s := generate(t, in)
	if got, want := sorted(s.Process.Capabilities.Bounding), sorted(allCapabilities()); !slices.Equal(got, want) {
		t.Errorf("bounding %q, want all %q", got, want)
	}
	if len(s.Process.Capabilities.Inheritable) != 0 {
		t.Errorf("inheritable %q", s.Process.Capabilities.Inheritable)
	}
	if s.Linux.Seccomp != nil || s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil {
		t.Errorf("privileged: seccomp %v masked %q readonly %q, want none", s.Linux.Seccomp != nil, s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	for _, dst := range []string{"/sys", "/sys/fs/cgroup"} {
		if m := findMount(s.Mounts, dst); !slices.Contains(m.Options, "rw") || slices.Contains(m.Options, "ro") {
			t.Errorf("%s %+v: want rw", dst, m)
		}
	}
	if d := s.Linux.Resources.Devices; len(d) != 1 || !d[0].Allow || d[0].Access != "rwm" || d[0].Type != "" {
		t.Errorf("device rules %+v, want allow all", d)
	}
}

func TestProtectedPaths(t *testing.T) {
	s := generate(t, baseInput(t))
	if !slices.Equal(s.Linux.MaskedPaths, DefaultMaskedPaths) || !slices.Equal(s.Linux.ReadonlyPaths, DefaultReadonlyPaths) {
		t.Errorf("masked %q readonly %q, want the defaults", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	in := baseInput(t)
	sc := linux(in.Config)
	sc.MaskedPaths, sc.ReadonlyPaths = []string{"/proc/kcore"}, []string{"/proc/sys"}
	s = generate(t, in)
	if !slices.Equal(s.Linux.MaskedPaths, []string{"/proc/kcore"}) || !slices.Equal(s.Linux.ReadonlyPaths, []string{"/proc/sys"}) {
		t.Errorf("masked %q readonly %q, want kubelet's", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	// procMount: Unmasked, which kubelet sends as two empty lists and
	// allows only with a user namespace of the pod's own.
	in = baseInput(t)
	sc = linux(in.Config)
	sc.NamespaceOptions = &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD}}
	in.UserNamespace = "/run/userns"
	s = generate(t, in)
	if len(s.Linux.MaskedPaths) != 0 || len(s.Linux.ReadonlyPaths) != 0 {
		t.Errorf("unmasked in a user namespace: masked %q readonly %q, want none", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	sc.MaskedPaths = []string{"/proc/kcore"}
	s = generate(t, in)
	if !slices.Equal(s.Linux.MaskedPaths, []string{"/proc/kcore"}) || !slices.Equal(s.Linux.ReadonlyPaths, DefaultReadonlyPaths) {
		t.Errorf("one list in a user namespace: masked %q readonly %q", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
}

func TestSeccomp(t *testing.T) {
	dir := t.TempDir()
	prof := filepath.Join(dir, "profile.json")
	body := `{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]}`
	if err := os.WriteFile(prof, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	local := func(ref string) *runtimeapi.SecurityProfile {
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: ref}
	}
	for _, tc := range []struct {
		name       string
		profile    *runtimeapi.SecurityProfile
		legacy     string
		caps       []string
		wantAction specs.LinuxSeccompAction // "" => no seccomp
		errField   string
	}{
		{name: "unset"},
		{name: "unconfined", profile: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}},
		{name: "runtime default", profile: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}, wantAction: specs.ActErrno},
		{name: "localhost", profile: local(prof), wantAction: specs.ActErrno},
		{name: "localhost missing", profile: local(filepath.Join(dir, "nope.json")), errField: "seccomp.localhost_ref"},
		{name: "localhost relative", profile: local("profile.json"), errField: "seccomp.localhost_ref"},
		{name: "localhost bad json", profile: local(bad), errField: "seccomp.localhost_ref"},
		{name: "legacy runtime/default", legacy: "runtime/default", wantAction: specs.ActErrno},
		{name: "legacy localhost", legacy: "localhost/" + prof, wantAction: specs.ActErrno},
		{name: "legacy unknown", legacy: "whatever", errField: "seccomp_profile_path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput(t)
			sc := linux(in.Config)
			sc.Seccomp, sc.SeccompProfilePath = tc.profile, tc.legacy //nolint:staticcheck // testing the deprecated field too
			s := generateCase(t, in, tc.errField)
			if s == nil {
				return
			}
			if tc.wantAction == "" {
				if s.Linux.Seccomp != nil {
					t.Errorf("seccomp %+v, want none", s.Linux.Seccomp)
				}
				return
			}
			if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != tc.wantAction || len(s.Linux.Seccomp.Syscalls) == 0 {
				t.Fatalf("seccomp %+v, want default action %s with rules", s.Linux.Seccomp, tc.wantAction)
			}
		})
	}
	t.Run("default profile follows capabilities", func(t *testing.T) {
		allows := func(s *specs.Spec, name string) bool {
			for _, r := range s.Linux.Seccomp.Syscalls {
				if r.Action == specs.ActAllow && slices.Contains(r.Names, name) && len(r.Args) == 0 {
					return true
				}
			}
			return false
		}
		in := baseInput(t)
		linux(in.Config).Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		if allows(generate(t, in), "mount") {
			t.Error("default profile allows mount without CAP_SYS_ADMIN")
		}
		linux(in.Config).Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"SYS_ADMIN"}}
		if !allows(generate(t, in), "mount") {
			t.Error("default profile refuses mount with CAP_SYS_ADMIN")
		}
	})
}

func TestNamespaces(t *testing.T) {
	pod := map[string]string{"network": "/run/ns/net", "ipc": "/run/ns/ipc", "uts": "/run/ns/uts", "pid": "/run/ns/pid"}
	joined := []specs.LinuxNamespace{
		{Type: specs.MountNamespace},
		{Type: specs.NetworkNamespace, Path: "/run/ns/net"},
		{Type: specs.IPCNamespace, Path: "/run/ns/ipc"},
		{Type: specs.UTSNamespace, Path: "/run/ns/uts"},
	}
	podMapping := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	podUserns := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
		Uids: []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}, Gids: []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}}
	for _, tc := range []struct {
		name     string
		ns       map[string]string
		opts     *runtimeapi.NamespaceOption
		cgroupNS bool
		want     []specs.LinuxNamespace
		errField string
		userns   bool
	}{
		{name: "container pid", ns: pod, opts: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
			want: append(slices.Clone(joined), specs.LinuxNamespace{Type: specs.PIDNamespace})},
		{name: "pod pid", ns: pod, opts: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
			want: append(slices.Clone(joined), specs.LinuxNamespace{Type: specs.PIDNamespace, Path: "/run/ns/pid"})},
		{name: "pod pid unset options", ns: pod,
			want: append(slices.Clone(joined), specs.LinuxNamespace{Type: specs.PIDNamespace, Path: "/run/ns/pid"})},
		{name: "pod pid, pod shares none", ns: map[string]string{"network": "/run/ns/net", "ipc": "/run/ns/ipc", "uts": "/run/ns/uts"},
			opts: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
			want: append(slices.Clone(joined), specs.LinuxNamespace{Type: specs.PIDNamespace})},
		{name: "node pid", ns: pod, opts: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE}, want: joined},
		{name: "target pid", ns: map[string]string{"pid": "/proc/42/ns/pid"}, opts: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "t"},
			want: []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.PIDNamespace, Path: "/proc/42/ns/pid"}}},
		{name: "target without path", opts: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "t"},
			errField: "namespace_options.pid"},
		{name: "host network ipc uts", opts: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE},
			want: []specs.LinuxNamespace{{Type: specs.MountNamespace}}},
		{name: "cgroup namespace", opts: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE}, cgroupNS: true,
			want: []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.CgroupNamespace}}},
		{name: "the pod's user namespace", userns: true, opts: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE, UsernsOptions: podUserns},
			want: []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.UserNamespace, Path: "/run/ns/user"}}},
		{name: "the pod's user namespace, options unset", userns: true, opts: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE},
			want: []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.UserNamespace, Path: "/run/ns/user"}}},
		{name: "other mappings than the pod's", userns: true, opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{
			Mode: runtimeapi.NamespaceMode_POD, Uids: []*runtimeapi.IDMapping{{HostId: 200000, Length: 65536}}}}, errField: "userns_options"},
		{name: "a user namespace the pod has not", opts: &runtimeapi.NamespaceOption{UsernsOptions: podUserns}, errField: "userns_options"},
		{name: "the host's in a pod with its own", userns: true, opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{
			Mode: runtimeapi.NamespaceMode_NODE}}, errField: "userns_options"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput(t)
			in.Namespaces, in.CgroupNamespace = tc.ns, tc.cgroupNS
			if tc.userns {
				in.UserNamespace, in.UIDMappings, in.GIDMappings = "/run/ns/user", podMapping, podMapping
			}
			linux(in.Config).NamespaceOptions = tc.opts
			s, err := Generate(in)
			switch {
			case tc.errField != "":
				wantInvalid(t, err, tc.errField)
				return
			case err != nil:
				t.Fatal(err)
			}
			if !slices.Equal(s.Linux.Namespaces, tc.want) {
				t.Errorf("namespaces %+v,\nwant %+v", s.Linux.Namespaces, tc.want)
			}
			if s.Hostname != "" {
				t.Errorf("hostname %q, want none", s.Hostname)
			}
		})
	}
}

func TestDevices(t *testing.T) {
	if _, err := os.Stat("/dev/null"); err != nil {
		t.Skip("no /dev/null")
	}
	dir := t.TempDir()
	link := filepath.Join(dir, "nul")
	if err := os.Symlink("/dev/null", link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		devs     []*runtimeapi.Device
		wantNode *specs.LinuxDevice
		wantRule *specs.LinuxDeviceCgroup
		errField string
	}{
		{name: "defaults"},
		{
			name:     "host device through a symlink",
			devs:     []*runtimeapi.Device{{ContainerPath: "/dev/mynull", HostPath: link, Permissions: "r"}},
			wantNode: &specs.LinuxDevice{Path: "/dev/mynull", Type: "c", Major: 1, Minor: 3},
			wantRule: &specs.LinuxDeviceCgroup{Allow: true, Type: "c", Access: "r"},
		},
		{name: "missing", devs: []*runtimeapi.Device{{ContainerPath: "/dev/x", HostPath: "/dev/husk-nope"}}, errField: "config.devices[0].host_path"},
		{name: "not a device", devs: []*runtimeapi.Device{{ContainerPath: "/dev/x", HostPath: dir}}, errField: "config.devices[0].host_path"},
		{name: "bad permissions", devs: []*runtimeapi.Device{{ContainerPath: "/dev/x", HostPath: "/dev/null", Permissions: "rwx"}}, errField: "config.devices[0].permissions"},
		{name: "bad container path", devs: []*runtimeapi.Device{{ContainerPath: "dev/x", HostPath: "/dev/null"}}, errField: "config.devices[0].container_path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput(t)
			in.Config.Devices = tc.devs
			s := generateCase(t, in, tc.errField)
			if s == nil {
				return
			}
			var paths []string
			for _, d := range s.Linux.Devices {
				paths = append(paths, d.Path)
			}
			for _, p := range []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"} {
				if !slices.Contains(paths, p) {
					t.Errorf("devices %q: missing %s", paths, p)
				}
			}
			rules := s.Linux.Resources.Devices
			if len(rules) == 0 || rules[0].Allow || rules[0].Access != "rwm" || rules[0].Type != "" {
				t.Fatalf("first device rule %+v, want deny all", rules)
			}
			hasRule := func(typ string, major, minor int64) bool {
				return slices.ContainsFunc(rules, func(r specs.LinuxDeviceCgroup) bool {
					return r.Allow && r.Type == typ && r.Major != nil && *r.Major == major &&
						((minor < 0 && r.Minor == nil) || (r.Minor != nil && *r.Minor == minor))
				})
			}
			if !hasRule("c", 1, 3) || !hasRule("c", 5, 2) || !hasRule("c", 136, -1) {
				t.Errorf("rules %+v: want null, ptmx and pts allowed", rules)
			}
			if tc.wantNode != nil {
				i := slices.IndexFunc(s.Linux.Devices, func(d specs.LinuxDevice) bool { return d.Path == tc.wantNode.Path })
				if i < 0 {
					t.Fatalf("no %s in %q", tc.wantNode.Path, paths)
				}
				d := s.Linux.Devices[i]
				if d.Type != tc.wantNode.Type || d.Major != tc.wantNode.Major || d.Minor != tc.wantNode.Minor || d.FileMode == nil {
					t.Errorf("device %+v, want %+v", d, tc.wantNode)
				}
				last := rules[len(rules)-1]
				if !last.Allow || last.Type != "c" || *last.Major != 1 || *last.Minor != 3 || last.Access != tc.wantRule.Access {
					t.Errorf("last rule %+v, want c 1:3 %s", last, tc.wantRule.Access)
				}
			}
		})
	}
}

func TestResources(t *testing.T) {
	in := baseInput(t)
	in.CgroupsPath = "/kubepods/pod1/c1"
	in.Config.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{
		MemoryLimitInBytes: 64 << 20, CpuShares: 512, OomScoreAdj: 999,
	}}
	s := generate(t, in)
	r := s.Linux.Resources
	if r.Memory == nil || *r.Memory.Limit != 64<<20 || r.CPU == nil || *r.CPU.Shares != 512 {
		t.Errorf("resources %+v", r)
	}
	if s.Process.OOMScoreAdj == nil || *s.Process.OOMScoreAdj != 999 {
		t.Errorf("oom score adj %v, want 999", s.Process.OOMScoreAdj)
	}
	if s.Linux.CgroupsPath != in.CgroupsPath {
		t.Errorf("cgroups path %q", s.Linux.CgroupsPath)
	}
	if len(r.Devices) == 0 {
		t.Error("no device rules")
	}
	if s := generate(t, baseInput(t)); s.Process.OOMScoreAdj != nil || s.Linux.Resources == nil {
		t.Errorf("no resources: oom %v resources %v", s.Process.OOMScoreAdj, s.Linux.Resources)
	}
}

func TestProcessMisc(t *testing.T) {
	in := baseInput(t)
	in.Config.Tty, in.Config.Stdin, in.Config.StdinOnce = true, true, true
	in.Config.Annotations = map[string]string{"a": "b"}
	in.Config.Labels = map[string]string{"l": "v"}
	sc := linux(in.Config)
	sc.NoNewPrivs, sc.ReadonlyRootfs = true, true
	s := generate(t, in)
	if !s.Process.Terminal || !s.Process.NoNewPrivileges || !s.Root.Readonly || s.Root.Path != in.RootfsPath {
		t.Errorf("process %+v root %+v", s.Process, s.Root)
	}
	want := map[string]string{"a": "b", AnnotationStdin: "true", AnnotationStdinOnce: "true"}
	if len(s.Annotations) != len(want) {
		t.Errorf("annotations %v, want %v", s.Annotations, want)
	}
	for k, v := range want {
		if s.Annotations[k] != v {
			t.Errorf("annotations %v, want %v", s.Annotations, want)
		}
	}
	if in.Config.Annotations[AnnotationStdin] != "" {
		t.Error("Generate changed the config's annotations")
	}
	if s.Version != specs.Version || s.Process.Rlimits != nil {
		t.Errorf("version %q rlimits %v", s.Version, s.Process.Rlimits)
	}
}

func TestStopSignal(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want syscall.Signal
		bad  bool
	}{
		{"", syscall.SIGTERM, false},
		{"SIGQUIT", syscall.SIGQUIT, false},
		{"QUIT", syscall.SIGQUIT, false},
		{"sigint", syscall.SIGINT, false},
		{"9", syscall.SIGKILL, false},
		{"SIGRTMIN+3", 37, false},
		{"RTMAX-1", 63, false},
		{"SIGRTMIN", 34, false},
		{"SIGFOO", 0, true},
		{"0", 0, true},
		{"65", 0, true},
		{"RTMIN+40", 0, true},
	} {
		got, err := StopSignal(ocispec.ImageConfig{StopSignal: tc.in})
		if tc.bad {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("StopSignal(%q) = %v, %v; want InvalidArgument", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("StopSignal(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	cfg := &runtimeapi.ContainerConfig{StopSignal: runtimeapi.Signal_SIGNAL_SIGUSR1}
	if got, err := ContainerStopSignal(cfg, ocispec.ImageConfig{StopSignal: "SIGQUIT"}); err != nil || got != syscall.SIGUSR1 {
		t.Errorf("ContainerStopSignal = %v, %v; want SIGUSR1", got, err)
	}
	if got, err := ContainerStopSignal(&runtimeapi.ContainerConfig{}, ocispec.ImageConfig{StopSignal: "SIGQUIT"}); err != nil || got != syscall.SIGQUIT {
		t.Errorf("ContainerStopSignal = %v, %v; want the image's SIGQUIT", got, err)
	}
}

// Every signal of the CRI's enum parses (ContainerConfig.stop_signal) and
// comes back as itself (ContainerStatus.stop_signal), real-time ones too.
func TestCRISignalRoundTrip(t *testing.T) {
	for name, v := range runtimeapi.Signal_value {
		if v == int32(runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT) {
			continue
		}
		sig, err := ParseSignal(strings.TrimPrefix(name, "SIGNAL_"))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		// Aliases (SIGIOT, SIGCLD, SIGPOLL) come back by their main name.
		got := CRISignal(sig)
		if back, err := ParseSignal(strings.TrimPrefix(got.String(), "SIGNAL_")); err != nil || back != sig {
			t.Errorf("%s: signal %d comes back as %v (%d, %v)", name, sig, got, back, err)
		}
	}
}

// A CRI mount may ask for the pod's id mappings (kubelet puts them on
// every mount of a pod with its own user namespace), and for no others.
func TestIDMappedMounts(t *testing.T) {
	podMapping := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	same := []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}
	other := []*runtimeapi.IDMapping{{HostId: 300000, Length: 65536}}
	vol := t.TempDir()
	for _, tc := range []struct {
		name     string
		userns   bool
		uids     []*runtimeapi.IDMapping
		errField string
	}{
		{name: "the pod's mappings", userns: true, uids: same},
		{name: "none", userns: true},
		{name: "other mappings", userns: true, uids: other, errField: "mounts[0].uidMappings"},
		{name: "a pod without a user namespace", uids: same, errField: "mounts[0].uidMappings"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput(t)
			if tc.userns {
				in.UserNamespace, in.UIDMappings, in.GIDMappings = "/run/ns/user", podMapping, podMapping
			}
			in.Config.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: vol, UidMappings: tc.uids, GidMappings: tc.uids}}
			s := generateCase(t, in, tc.errField)
			if s == nil {
				return
			}
			for _, m := range s.Mounts {
				if m.Destination == "/data" {
					if mapped := len(m.UIDMappings) > 0; mapped != (tc.uids != nil) || (mapped && !slices.Equal(m.UIDMappings, podMapping)) {
						t.Errorf("mount mappings %v", m.UIDMappings)
					}
					return
				}
			}
			t.Error("no /data mount")
		})
	}
}

func TestAppArmorProfile(t *testing.T) {
	prof := func(t runtimeapi.SecurityProfile_ProfileType, ref string) *runtimeapi.SecurityProfile {
		return &runtimeapi.SecurityProfile{ProfileType: t, LocalhostRef: ref}
	}
	for _, tc := range []struct {
		name    string
		sc      *runtimeapi.LinuxContainerSecurityContext
		enabled bool
		want    string
		code    func(error) bool // nil: no error
	}{
		{"unset is the default", &runtimeapi.LinuxContainerSecurityContext{}, true, "husk-default", nil},
		{"runtime/default", &runtimeapi.LinuxContainerSecurityContext{Apparmor: prof(runtimeapi.SecurityProfile_RuntimeDefault, "")}, true, "husk-default", nil},
		{"unconfined", &runtimeapi.LinuxContainerSecurityContext{Apparmor: prof(runtimeapi.SecurityProfile_Unconfined, "")}, true, "", nil},
		{"localhost", &runtimeapi.LinuxContainerSecurityContext{Apparmor: prof(runtimeapi.SecurityProfile_Localhost, "my-profile")}, true, "my-profile", nil},
		{"localhost/ prefix", &runtimeapi.LinuxContainerSecurityContext{Apparmor: prof(runtimeapi.SecurityProfile_Localhost, "localhost/my-profile")}, true, "my-profile", nil},
		{"old field", &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "localhost/p1"}, true, "p1", nil},
		{"old field unconfined", &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "unconfined"}, true, "", nil},
		{"privileged default", &runtimeapi.LinuxContainerSecurityContext{Privileged: true}, true, "", nil},
		{"privileged localhost", &runtimeapi.LinuxContainerSecurityContext{Privileged: true, Apparmor: prof(runtimeapi.SecurityProfile_Localhost, "p")}, true, "p", nil},
		{"no AppArmor: default", &runtimeapi.LinuxContainerSecurityContext{}, false, "", nil},
		{"no AppArmor: localhost", &runtimeapi.LinuxContainerSecurityContext{Apparmor: prof(runtimeapi.SecurityProfile_Localhost, "p")}, false, "", errdefs.IsFailedPrecondition},
		{"empty localhost", &runtimeapi.LinuxContainerSecurityContext{Apparmor: prof(runtimeapi.SecurityProfile_Localhost, "")}, true, "", errdefs.IsInvalidArgument},
		{"blank in name", &runtimeapi.LinuxContainerSecurityContext{Apparmor: prof(runtimeapi.SecurityProfile_Localhost, "a b")}, true, "", errdefs.IsInvalidArgument},
		{"newline in name", &runtimeapi.LinuxContainerSecurityContext{Apparmor: prof(runtimeapi.SecurityProfile_Localhost, "a\nchangeprofile x")}, true, "", errdefs.IsInvalidArgument},
		{"unknown old value", &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "docker-default"}, true, "", errdefs.IsInvalidArgument},
		{"unknown type", &runtimeapi.LinuxContainerSecurityContext{Apparmor: prof(7, "")}, true, "", errdefs.IsInvalidArgument},
	} {
		got, err := apparmorProfile(tc.sc, tc.enabled)
		switch {
		case tc.code == nil && (err != nil || got != tc.want):
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		case tc.code != nil && !tc.code(err):
			t.Errorf("%s: %q, %v; want the other error class", tc.name, got, err)
		case tc.code != nil && !strings.Contains(err.Error(), "apparmor"):
			t.Errorf("%s: %v does not name the field", tc.name, err)
		}
	}
}
