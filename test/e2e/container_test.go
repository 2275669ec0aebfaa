package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// ctrEnv is a daemon with a pod network and busybox images pulled.
type ctrEnv struct {
	d    *daemon
	reg  *imagetest.Registry
	logs string
}

func newCtrEnv(t *testing.T) *ctrEnv {
	t.Helper()
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "busybox:plain", imagetest.BusyboxImage(t, v1.Config{}))
	reg.Push(t, "busybox:entrypoint", imagetest.BusyboxImage(t, v1.Config{
		Entrypoint: []string{"/bin/echo", "entry"}, Cmd: []string{"cmd1", "cmd2"},
		Env: []string{imagetest.DefaultPath, "FROM_IMAGE=image", "OVERRIDE=image"}, WorkingDir: "/tmp",
	}))
	reg.Push(t, "busybox:user", imagetest.BusyboxImage(t, v1.Config{User: "alice", Cmd: []string{"id"}}))
	d := newDaemon(t, insecureConfig(reg.Host))
	n := newPodNet(t, d)
	n.install(t, d)
	for _, tag := range []string{"plain", "entrypoint", "user"} {
		pullImage(t, d, reg.Ref("busybox:"+tag))
	}
	return &ctrEnv{d: d, reg: reg, logs: t.TempDir()}
}

func (e *ctrEnv) pod(t *testing.T, name string) (string, *runtimeapi.PodSandboxConfig) {
	t.Helper()
	cfg := podConfig(name)
	cfg.LogDirectory = filepath.Join(e.logs, name)
	return runPod(t, e.d, cfg), cfg
}

func (e *ctrEnv) image(tag string) *runtimeapi.ImageSpec {
	return &runtimeapi.ImageSpec{Image: e.reg.Ref("busybox:" + tag)}
}

func ctrConfig(name string, image *runtimeapi.ImageSpec, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    image,
		Command:  cmd,
		LogPath:  name + ".log",
		Linux:    &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}}},
	}
}

func (e *ctrEnv) create(t *testing.T, podID string, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	resp, err := e.d.runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", cfg.Metadata.Name, err)
	}
	return resp.ContainerId
}

func (e *ctrEnv) start(t *testing.T, id string) {
	t.Helper()
	if _, err := e.d.runtime.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
}

func (e *ctrEnv) run(t *testing.T, podID string, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	id := e.create(t, podID, pod, cfg)
	e.start(t, id)
	return id
}

func (e *ctrEnv) status(t *testing.T, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	resp, err := e.d.runtime.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("ContainerStatus: %v", err)
	}
	return resp.Status
}

func (e *ctrEnv) waitExited(t *testing.T, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	var st *runtimeapi.ContainerStatus
	waitFor(t, func() bool {
		st = e.status(t, id)
		return st.State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	return st
}

var logLine = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([PF]) (.*)$`)

// output reads a CRI log file: the full lines of a stream, partial lines
// joined, checking every line's format.
func output(t *testing.T, path, stream string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var out []string
	var partial strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := logLine.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Fatalf("log line not in the CRI format: %q", sc.Text())
		}
		if _, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
			t.Fatalf("timestamp %q: %v", m[1], err)
		}
		if m[2] != stream {
			continue
		}
		partial.WriteString(m[4])
		if m[3] == "F" {
			out = append(out, partial.String())
			partial.Reset()
		}
	}
	return out
}

func TestContainerCommandSemantics(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "semantics")
	for i, tc := range []struct {
		tag       string
		cmd, args []string
		want      string
	}{
		{"entrypoint", nil, nil, "entry cmd1 cmd2"},
		{"entrypoint", nil, []string{"a1"}, "entry a1"},
		{"entrypoint", []string{"/bin/echo", "c"}, nil, "c"},
		{"entrypoint", []string{"/bin/echo", "c"}, []string{"a1", "a2"}, "c a1 a2"},
		{"plain", []string{"echo", "via-path"}, nil, "via-path"},
		{"plain", nil, []string{"echo", "args-only"}, "args-only"},
	} {
		cfg := ctrConfig(fmt.Sprintf("sem%d", i), e.image(tc.tag), tc.cmd...)
		cfg.Args = tc.args
		id := e.run(t, podID, pod, cfg)
		st := e.waitExited(t, id)
		got := output(t, st.LogPath, "stdout")
		if st.ExitCode != 0 || len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s command %v args %v: exit %d, output %q; want %q", tc.tag, tc.cmd, tc.args, st.ExitCode, got, tc.want)
		}
	}
}
