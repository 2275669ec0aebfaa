package e2e

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// ctrEnv is a daemon with a pod network and busybox images pulled.
type ctrEnv struct {
	d    *daemon
	reg  *imagetest.Registry
	logs string
}

// newCtrEnv starts a daemon pulling from a registry of busybox images,
// with config added to its config file.
func newCtrEnv(t *testing.T, config ...string) *ctrEnv {
	t.Helper()
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "busybox:plain", imagetest.BusyboxImage(t, v1.Config{}))
	reg.Push(t, "busybox:entrypoint", imagetest.BusyboxImage(t, v1.Config{
		Entrypoint: []string{"/bin/echo", "entry"}, Cmd: []string{"cmd1", "cmd2"},
		Env: []string{imagetest.DefaultPath, "FROM_IMAGE=image", "OVERRIDE=image"}, WorkingDir: "/tmp",
	}))
	reg.Push(t, "busybox:user", imagetest.BusyboxImage(t, v1.Config{User: "alice", Cmd: []string{"id"}}))
	// Top-level keys first: after insecureConfig's tables they would be theirs.
	d := newDaemon(t, strings.Join(config, "\n")+"\n"+insecureConfig(reg.Host))
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
	if partial.Len() > 0 { // the last line, never ended
		out = append(out, partial.String())
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

// runToEnd runs a container to completion and returns its status and
// standard output.
func (e *ctrEnv) runToEnd(t *testing.T, podID string, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) (*runtimeapi.ContainerStatus, []string) {
	t.Helper()
	id := e.run(t, podID, pod, cfg)
	st := e.waitExited(t, id)
	return st, output(t, st.LogPath, "stdout")
}

func TestContainerEnvWorkdirAndUser(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "envuser")

	cfg := ctrConfig("env", e.image("entrypoint"), "sh", "-c", "echo $FROM_IMAGE $OVERRIDE $FROM_CONFIG; pwd")
	cfg.Envs = []*runtimeapi.KeyValue{{Key: "OVERRIDE", Value: []byte("config")}, {Key: "FROM_CONFIG", Value: []byte("yes")}}
	st, out := e.runToEnd(t, podID, pod, cfg)
	if st.ExitCode != 0 || len(out) != 2 || out[0] != "image config yes" || out[1] != "/tmp" {
		t.Errorf("env and image workdir: exit %d, %q", st.ExitCode, out)
	}
	cfg = ctrConfig("workdir", e.image("entrypoint"), "pwd")
	cfg.WorkingDir = "/home"
	if _, out := e.runToEnd(t, podID, pod, cfg); len(out) != 1 || out[0] != "/home" {
		t.Errorf("working_dir: %q", out)
	}

	// The kernel keeps supplementary groups sorted, as id shows them.
	for name, tc := range map[string]struct {
		tag  string
		sc   *runtimeapi.LinuxContainerSecurityContext
		want string
	}{
		"image USER":          {"user", nil, "uid=1000(alice) gid=1000(alice) groups=50(staff),1000(alice),2000(extra)"},
		"run_as_user":         {"plain", &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1001}}, "uid=1001(bob) gid=1001(bob) groups=50(staff),1001(bob)"},
		"run_as_username":     {"plain", &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "alice"}, "uid=1000(alice) gid=1000(alice) groups=50(staff),1000(alice),2000(extra)"},
		"run_as_group":        {"plain", &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1001}, RunAsGroup: &runtimeapi.Int64Value{Value: 50}}, "uid=1001(bob) gid=50(staff) groups=50(staff)"},
		"supplemental_groups": {"plain", &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1001}, SupplementalGroups: []int64{4242}}, "uid=1001(bob) gid=1001(bob) groups=50(staff),1001(bob),4242"},
		"root by default":     {"plain", nil, "uid=0(root) gid=0(root) groups=0(root)"},
	} {
		cfg := ctrConfig(strings.NewReplacer(" ", "-", "_", "-").Replace(name), e.image(tc.tag), "id")
		if tc.sc != nil {
			tc.sc.NamespaceOptions = cfg.Linux.SecurityContext.NamespaceOptions
			cfg.Linux.SecurityContext = tc.sc
		}
		st, out := e.runToEnd(t, podID, pod, cfg)
		if len(out) != 1 || !strings.HasPrefix(out[0], tc.want) {
			t.Errorf("%s: id says %q, want %q", name, out, tc.want)
		}
		// ContainerStatus.user says the same, in numbers.
		if got := statusUser(st); got != idNumbers(tc.want) {
			t.Errorf("%s: ContainerStatus.user %q, want %q", name, got, idNumbers(tc.want))
		}
		if st.StopSignal != runtimeapi.Signal_SIGNAL_SIGTERM {
			t.Errorf("%s: stop_signal %v, want SIGTERM (the image has no STOPSIGNAL)", name, st.StopSignal)
		}
	}
}

// statusUser formats ContainerStatus.user as "uid gid groups...", the
// groups sorted.
func statusUser(st *runtimeapi.ContainerStatus) string {
	u := st.GetUser().GetLinux()
	if u == nil {
		return "none"
	}
	groups := slices.Clone(u.SupplementalGroups)
	slices.Sort(groups)
	return fmt.Sprint(u.Uid, " ", u.Gid, " ", groups)
}

// idNumbers turns id's "uid=1(a) gid=2(b) groups=3(c),4" into "1 2 [3 4]".
func idNumbers(id string) string {
	m := regexp.MustCompile(`^uid=(\d+)\S* gid=(\d+)\S* groups=(.*)$`).FindStringSubmatch(id)
	if m == nil {
		return "unparsable " + id
	}
	var groups []int64
	for _, g := range regexp.MustCompile(`(?:^|,)(\d+)`).FindAllStringSubmatch(m[3], -1) {
		n, _ := strconv.ParseInt(g[1], 10, 64)
		groups = append(groups, n)
	}
	slices.Sort(groups)
	return fmt.Sprint(m[1], " ", m[2], " ", groups)
}

func TestContainerSeesOnlyItsOwnProcessesAndFDs(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "isolation")
	// The pids the container sees are its own: a handful, counted from 1
	// (its shell), and nothing of the host's.
	_, out := e.runToEnd(t, podID, pod, ctrConfig("ps", e.image("plain"), "sh", "-c", "ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; ls /proc/self/fd | sort | tr '\\n' ' '"))
	if len(out) != 2 {
		t.Fatalf("output %q", out)
	}
	pids := strings.Fields(out[0])
	if len(pids) == 0 || pids[0] != "1" || len(pids) > 5 {
		t.Errorf("processes seen: %q", out[0])
	}
	for _, p := range pids {
		if n, _ := strconv.Atoi(p); n > 10 {
			t.Errorf("a process outside the container is visible: %s", p)
		}
	}
	if strings.TrimSpace(out[1]) != "0 1 2 3" {
		// 3 is the directory ls reads /proc/self/fd through.
		t.Errorf("file descriptors: %q, want only 0 1 2 (and ls's own 3)", out[1])
	}

	// In a pod sharing its PID namespace, containers see the pod init and
	// each other.
	shared := podConfig("shared")
	shared.LogDirectory = filepath.Join(e.logs, "shared")
	shared.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	sharedID := runPod(t, e.d, shared)
	sleeper := ctrConfig("sleeper", e.image("plain"), "sleep", "300")
	sleeper.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	e.run(t, sharedID, shared, sleeper)
	looker := ctrConfig("looker", e.image("plain"), "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; ps -o comm | grep -c sleep; cat /proc/1/exe > /dev/null 2>&1 && echo readable || echo denied; cat /proc/1/comm")
	looker.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	_, out = e.runToEnd(t, sharedID, shared, looker)
	if len(out) != 4 || !strings.Contains(out[0], "pod-init") || strings.TrimSpace(out[1]) != "1" || out[2] != "denied" || out[3] != "husk-pod-init" {
		t.Errorf("in a shared PID namespace: %q", out)
	}
}

func TestLogsSurviveReopen(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "logs")
	long := strings.Repeat("x", 40000)
	cfg := ctrConfig("talker", e.image("plain"), "sh", "-c",
		"echo out1; echo err1 >&2; printf '"+long+"\\n'; printf 'no-newline'; sleep 1; i=0; while [ $i -lt 40 ]; do echo tick$i; i=$((i+1)); sleep 0.05; done")
	id := e.run(t, podID, pod, cfg)
	st := e.status(t, id)
	time.Sleep(1500 * time.Millisecond)
	rotated := st.LogPath + ".1"
	if err := os.Rename(st.LogPath, rotated); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.runtime.ReopenContainerLog(context.Background(), &runtimeapi.ReopenContainerLogRequest{ContainerId: id}); err != nil {
		t.Fatalf("ReopenContainerLog: %v", err)
	}
	e.waitExited(t, id)
	first, second := output(t, rotated, "stdout"), output(t, st.LogPath, "stdout")
	if len(first) < 3 || first[0] != "out1" || first[1] != long {
		t.Fatalf("before rotation: %d lines, first %q", len(first), first[:min(1, len(first))])
	}
	if errs := output(t, rotated, "stderr"); len(errs) != 1 || errs[0] != "err1" {
		t.Errorf("stderr: %q", errs)
	}
	all := append(append([]string{}, first[3:]...), second...)
	if first[2] != "no-newline"+"tick0" && first[2] != "no-newline" {
		t.Errorf("the line without newline: %q", first[2])
	}
	// No gap and no duplicate across the rotation.
	var ticks []string
	for _, l := range append([]string{first[2]}, all...) {
		if i := strings.Index(l, "tick"); i >= 0 {
			ticks = append(ticks, l[i:])
		}
	}
	for i := range 40 {
		if i >= len(ticks) || ticks[i] != fmt.Sprintf("tick%d", i) {
			t.Fatalf("ticks across the rotation: %q", ticks)
		}
	}
	if len(second) == 0 {
		t.Error("nothing written to the reopened log")
	}
	// Lines longer than 16 KiB are split into partial lines.
	raw, _ := os.ReadFile(rotated)
	if !strings.Contains(string(raw), " stdout P "+strings.Repeat("x", 100)) {
		t.Error("a 40000-byte line was not split into partial lines")
	}
}

func TestStopKillsWhatIgnoresSIGTERM(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "stop")
	// Not PID 1 of its namespace (sh is), so SIGTERM would kill it were it
	// not ignored.
	id := e.run(t, podID, pod, ctrConfig("stubborn", e.image("plain"), "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"))
	start := time.Now()
	if _, err := e.d.runtime.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	st := e.status(t, id)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 {
		t.Errorf("after stop: %v exit %d", st.State, st.ExitCode)
	}
	if took < time.Second {
		t.Errorf("stopped after %v, before the timeout", took)
	}
	// Stop again: idempotent.
	if _, err := e.d.runtime.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Errorf("second stop: %v", err)
	}
	// A well-behaved container stops on SIGTERM before the timeout.
	id = e.run(t, podID, pod, ctrConfig("polite", e.image("plain"), "sh", "-c", "trap 'exit 3' TERM; while true; do sleep 0.1; done"))
	time.Sleep(200 * time.Millisecond)
	if _, err := e.d.runtime.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t, id); st.ExitCode != 3 || st.Reason != "Error" {
		t.Errorf("polite container: exit %d reason %s", st.ExitCode, st.Reason)
	}
}

func TestMemoryHogIsOOMKilled(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "oom")
	cfg := ctrConfig("hog", e.image("plain"), "sh", "-c", "x=a; while true; do x=$x$x; done")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}
	st, _ := e.runToEnd(t, podID, pod, cfg)
	if st.Reason != "OOMKilled" || st.ExitCode != 137 {
		t.Errorf("memory hog: reason %q exit %d", st.Reason, st.ExitCode)
	}
	// A child killed for memory while the container's process goes on and
	// exits 0: the container completed, it was not OOMKilled (the pod's
	// status says Completed, exit 0).
	cfg = ctrConfig("survivor", e.image("plain"), "sh", "-c", `sh -c 'x=a; while true; do x=$x$x; done'; echo child gone; exit 0`)
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}
	st, out := e.runToEnd(t, podID, pod, cfg)
	if st.Reason != "Completed" || st.ExitCode != 0 || len(out) != 1 || out[0] != "child gone" {
		t.Errorf("a container whose child was OOM-killed: reason %q exit %d, output %q", st.Reason, st.ExitCode, out)
	}
}

func TestTerminationMessage(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "termination")
	hostFile := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(hostFile, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	cfg := ctrConfig("dying", e.image("plain"), "sh", "-c", "echo 'it went wrong' > /dev/termination-log; exit 2")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/dev/termination-log", HostPath: hostFile}}
	cfg.Annotations = map[string]string{"io.kubernetes.container.terminationMessagePath": "/dev/termination-log"}
	st, _ := e.runToEnd(t, podID, pod, cfg)
	// kubelet reads the file itself (through the mount the status names)
	// and joins it to the runtime's message: the runtime that copied the
	// file there showed it twice in the pod's status.
	if st.ExitCode != 2 || st.Reason != "Error" || st.Message != "" {
		t.Errorf("status: exit %d reason %q message %q, want exit 2, Error and no message", st.ExitCode, st.Reason, st.Message)
	}
	if len(st.Mounts) != 1 || st.Mounts[0].ContainerPath != "/dev/termination-log" || st.Mounts[0].HostPath != hostFile {
		t.Errorf("status mounts %v, want the termination log's", st.Mounts)
	}
	if b, _ := os.ReadFile(hostFile); string(b) != "it went wrong\n" {
		t.Errorf("termination log %q", b)
	}
	if st.FinishedAt <= st.StartedAt || st.StartedAt <= st.CreatedAt {
		t.Errorf("times: created %d started %d finished %d", st.CreatedAt, st.StartedAt, st.FinishedAt)
	}
}

// A container's status names its image as kubelet shows it in the pod's
// status and compares it with the pod's spec: kubelet creates containers
// with the image's id and the name in user_specified_image.
func TestContainerStatusNamesTheImage(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "imagename")
	is, err := e.d.images.ImageStatus(t.Context(), &runtimeapi.ImageStatusRequest{Image: e.image("plain")})
	if err != nil || is.GetImage() == nil || len(is.Image.RepoDigests) != 1 {
		t.Fatalf("ImageStatus: %v, %v", is, err)
	}
	img := is.Image
	for name, tc := range map[string]struct {
		spec      *runtimeapi.ImageSpec
		wantImage string
	}{
		"by id, as kubelet": {&runtimeapi.ImageSpec{Image: img.Id, UserSpecifiedImage: "busybox:plain"}, "busybox:plain"},
		"by id alone":       {&runtimeapi.ImageSpec{Image: img.Id}, img.RepoTags[0]},
		"by tag":            {e.image("plain"), img.RepoTags[0]},
	} {
		id := e.create(t, podID, pod, ctrConfig("img-"+strings.ReplaceAll(strings.ReplaceAll(name, " ", "-"), ",", ""), tc.spec, "true"))
		st := e.status(t, id)
		if st.Image.GetImage() != tc.wantImage || st.ImageRef != img.RepoDigests[0] || st.ImageId != img.Id {
			t.Errorf("%s: image %q ref %q id %q, want %q, %q and %q", name, st.Image.GetImage(), st.ImageRef, st.ImageId, tc.wantImage, img.RepoDigests[0], img.Id)
		}
		// ListContainers keeps the id as image_ref: kubelet's image
		// garbage collector matches it with ListImages' ids.
		list, err := e.d.runtime.ListContainers(t.Context(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
		if err != nil || len(list.Containers) != 1 || list.Containers[0].ImageRef != img.Id {
			t.Errorf("%s: ListContainers %v, %v", name, list.GetContainers(), err)
		}
	}
}

// A last line without its newline is logged as partial (P): kubelet's
// FallbackToLogsOnError and crictl logs show it as written.
func TestUnterminatedLastLineIsPartial(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "partial")
	st, out := e.runToEnd(t, podID, pod, ctrConfig("printer", e.image("plain"), "sh", "-c", "echo first; printf DONE; exit 1"))
	raw, err := os.ReadFile(st.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], " stdout F first") || !strings.HasSuffix(lines[1], " stdout P DONE") {
		t.Errorf("log %q, want a full line and then a partial one", raw)
	}
	if len(out) != 2 || out[1] != "DONE" {
		t.Errorf("output %q", out)
	}
}

// The daemon is killed while containers run and write logs. Back, it finds
// them running, their logs have no gap, and one that exited during the
// outage is reported with its exit code.
func TestContainersSurviveDaemonSIGKILL(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "outage")
	counter := e.run(t, podID, pod, ctrConfig("counter", e.image("plain"), "sh", "-c", "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.02; done"))
	quitter := e.run(t, podID, pod, ctrConfig("quitter", e.image("plain"), "sh", "-c", "sleep 1; exit 7"))
	time.Sleep(300 * time.Millisecond)
	_ = e.d.stop(syscall.SIGKILL)
	time.Sleep(1500 * time.Millisecond) // the quitter exits meanwhile
	e.d.start()

	if st := e.status(t, counter); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("counter after the restart: %v", st.State)
	}
	st := e.status(t, quitter)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 7 {
		t.Errorf("quitter after the restart: %v exit %d", st.State, st.ExitCode)
	}
	// Attach works across the restart: it is the monitor's. crictl is
	// ended once it has printed a line (an emulated guest under load took
	// more than 3 s to start it and attach: the time is not the point).
	if line, err := firstLine(e.d.crictlCommand(context.Background(), "attach", counter), 60*time.Second); err != nil || !regexp.MustCompile(`^line\d+$`).MatchString(line) {
		t.Errorf("crictl attach after the restart printed %q (%v)", line, err)
	}
	if _, err := e.d.runtime.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: counter, Timeout: 0}); err != nil {
		t.Fatal(err)
	}
	lines := output(t, e.status(t, counter).LogPath, "stdout")
	if len(lines) < 50 {
		t.Fatalf("only %d lines logged", len(lines))
	}
	for i, l := range lines {
		if l != fmt.Sprintf("line%d", i) {
			t.Fatalf("line %d is %q: a gap or a duplicate", i, l)
		}
	}
}

func TestFailedStartIsReportedAndUndone(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "failing")
	id := e.create(t, podID, pod, ctrConfig("nocmd", e.image("plain"), "/no/such/command"))
	// While the start is under way, the container is not reported
	// running: it never runs (kubelet and tests that see RUNNING read its
	// log).
	polled := make(chan []runtimeapi.ContainerState)
	started := make(chan struct{})
	go func() {
		var seen []runtimeapi.ContainerState
		for {
			select {
			case <-started:
				polled <- seen
				return
			default:
			}
			resp, err := e.d.runtime.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
			if err == nil && len(resp.Containers) == 1 {
				if s := resp.Containers[0].State; len(seen) == 0 || seen[len(seen)-1] != s {
					seen = append(seen, s)
				}
			}
		}
	}()
	_, err := e.d.runtime.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: id})
	close(started)
	if seen := <-polled; slices.Contains(seen, runtimeapi.ContainerState_CONTAINER_RUNNING) || slices.Contains(seen, runtimeapi.ContainerState_CONTAINER_UNKNOWN) {
		t.Errorf("states listed while a start that fails was under way: %v", seen)
	}
	if err == nil || !strings.Contains(err.Error(), "/no/such/command") {
		t.Fatalf("starting a missing command: %v", err)
	}
	st := e.status(t, id)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.Reason != "StartError" || !strings.Contains(st.Message, "/no/such/command") {
		t.Errorf("status: %v %q %q", st.State, st.Reason, st.Message)
	}
	// Starting it again is not possible; a started container neither.
	if _, err := e.d.runtime.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: id}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second start: %v", err)
	}
	// Bad input at create: a clear error naming the field, nothing left.
	before := countLeaks(t, e.d)
	cfg := ctrConfig("badmount", e.image("plain"), "true")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/no/such/host/path"}}
	_, err = e.d.runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "mounts[0].host_path") {
		t.Errorf("a missing host path: %v", err)
	}
	_, err = e.d.runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: ctrConfig("noimage", &runtimeapi.ImageSpec{Image: "never/pulled:1"}, "true"), SandboxConfig: pod})
	if status.Code(err) != codes.NotFound {
		t.Errorf("an image not pulled: %v", err)
	}
	if after := countLeaks(t, e.d); after != before {
		t.Errorf("failed creates left something behind:\nbefore %+v\nafter  %+v", before, after)
	}
	list, _ := e.d.runtime.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{})
	if len(list.Containers) != 1 {
		t.Errorf("containers listed: %v", list.Containers)
	}
}

func TestContainerInStoppedPodCannotStart(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "stopped")
	id := e.create(t, podID, pod, ctrConfig("late", e.image("plain"), "true"))
	stopPod(t, e.d, podID)
	_, err := e.d.runtime.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: id})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("start in a stopped pod: %v", err)
	}
	_, err = e.d.runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: ctrConfig("later", e.image("plain"), "true"), SandboxConfig: pod})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("create in a stopped pod: %v", err)
	}
	// Removing the pod removes its containers.
	removePod(t, e.d, podID)
	if _, err := e.d.runtime.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: id}); status.Code(err) != codes.NotFound {
		t.Errorf("container of a removed pod: %v", err)
	}
}

// An image whose directories are symlinks to host paths cannot send a
// container's mount onto the host: the symlinks resolve inside the rootfs.
func TestMountThroughImageSymlinkStaysInRootfs(t *testing.T) {
	e := newCtrEnv(t)
	hostDir := t.TempDir()
	e.reg.Push(t, "busybox:evil", imagetest.BusyboxImage(t, v1.Config{}, imagetest.Layer(t,
		imagetest.Entry{Name: "evil", Type: tar.TypeSymlink, Linkname: hostDir},
		imagetest.Entry{Name: "slash", Type: tar.TypeSymlink, Linkname: "/"},
	)))
	pullImage(t, e.d, e.reg.Ref("busybox:evil"))
	podID, pod := e.pod(t, "evil")
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "payload"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Through "/": the mount lands on the container's own /tmp/mnt.
	cfg := ctrConfig("slash", e.image("evil"), "ls", "/tmp/mnt")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/slash/tmp/mnt", HostPath: src}}
	st, out := e.runToEnd(t, podID, pod, cfg)
	if st.ExitCode != 0 || len(out) != 1 || out[0] != "payload" {
		t.Errorf("through a symlink to /: exit %d %q", st.ExitCode, out)
	}
	// Through a symlink to a host directory: that directory does not exist
	// in the rootfs, and nothing may be made on the host.
	cfg = ctrConfig("evil", e.image("evil"), "true")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/evil/mnt", HostPath: src}}
	id := e.create(t, podID, pod, cfg)
	_, err := e.d.runtime.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: id})
	t.Logf("start through a symlink to a host path: %v", err)
	entries, _ := os.ReadDir(hostDir)
	if len(entries) != 0 {
		t.Errorf("the mount reached the host: %v", entries)
	}
}

func TestListContainersFilters(t *testing.T) {
	e := newCtrEnv(t)
	podA, cfgA := e.pod(t, "fa")
	podB, cfgB := e.pod(t, "fb")
	a := ctrConfig("a", e.image("plain"), "sleep", "300")
	a.Labels = map[string]string{"role": "a"}
	ida := e.run(t, podA, cfgA, a)
	idb := e.create(t, podB, cfgB, ctrConfig("b", e.image("plain"), "true"))
	list := func(f *runtimeapi.ContainerFilter) string {
		resp, err := e.d.runtime.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range resp.Containers {
			ids = append(ids, c.Id)
		}
		return strings.Join(ids, ",")
	}
	for name, tc := range map[string]struct {
		f    *runtimeapi.ContainerFilter
		want string
	}{
		"id":      {&runtimeapi.ContainerFilter{Id: ida[:10]}, ida},
		"pod":     {&runtimeapi.ContainerFilter{PodSandboxId: podB}, idb},
		"running": {&runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}, ida},
		"created": {&runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_CREATED}}, idb},
		"label":   {&runtimeapi.ContainerFilter{LabelSelector: map[string]string{"role": "a"}}, ida},
	} {
		if got := list(tc.f); got != tc.want {
			t.Errorf("%s: %s, want %s", name, got, tc.want)
		}
	}
}

func TestContainerCyclesLeaveNothing(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "cycles")
	warm := e.run(t, podID, pod, ctrConfig("warm", e.image("plain"), "true"))
	if _, err := e.d.runtime.RemoveContainer(context.Background(), &runtimeapi.RemoveContainerRequest{ContainerId: warm}); err != nil {
		t.Fatal(err)
	}
	before := countContainerLeaks(t, e.d)
	for i := range 200 {
		cmd := []string{"sleep", "300"}
		if i%3 == 0 {
			cmd = []string{"true"}
		}
		id := e.run(t, podID, pod, ctrConfig(fmt.Sprintf("c%d", i), e.image("plain"), cmd...))
		if i == 1 {
			// The counter sees what it counts: a running container's
			// monitor.
			if got := countContainerLeaks(t, e.d); got.Monitors != before.Monitors+1 {
				t.Fatalf("with a container running, %d monitors counted, want %d", got.Monitors, before.Monitors+1)
			}
		}
		if _, err := e.d.runtime.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 0}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.d.runtime.RemoveContainer(context.Background(), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.d.runtime.RemoveContainer(context.Background(), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("second remove: %v", err)
		}
	}
	if after := countContainerLeaks(t, e.d); after != before {
		t.Errorf("200 cycles left something behind:\nbefore %+v\nafter  %+v", before, after)
	}
}

type containerLeaks struct {
	Mounts, Cgroups, Monitors, Dirs int
}

func countContainerLeaks(t *testing.T, d *daemon) containerLeaks {
	t.Helper()
	var l containerLeaks
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], d.dir) {
			l.Mounts++
		}
	}
	// Below husk's root only: the root is made by the first pod and stays,
	// so counting it made a test that runs first see a leak.
	root := huskCgroupRoot()
	_ = filepath.WalkDir(root, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.IsDir() && p != root {
			l.Cgroups++
		}
		return nil
	})
	out, _ := exec.Command("pgrep", "-f", "^husk-runtime monitor --state "+d.root).Output()
	l.Monitors = len(strings.Fields(string(out)))
	for _, dir := range []string{filepath.Join(d.root, "containers"), filepath.Join(d.state, "containers")} {
		entries, _ := os.ReadDir(dir)
		l.Dirs += len(entries)
	}
	return l
}

func TestSeccompAndPIDModes(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "seccomp")
	for name, nnp := range map[string]bool{"default": false, "no_new_privs": true} {
		cfg := ctrConfig("sc-"+strings.ReplaceAll(name, "_", "-"), e.image("plain"), "grep", "-E", "^(Seccomp|NoNewPrivs):", "/proc/self/status")
		cfg.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		cfg.Linux.SecurityContext.NoNewPrivs = nnp
		st, out := e.runToEnd(t, podID, pod, cfg)
		want := fmt.Sprintf("NoNewPrivs:\t%d", map[bool]int{false: 0, true: 1}[nnp])
		if st.ExitCode != 0 || len(out) != 2 || out[0] != want || out[1] != "Seccomp:\t2" {
			t.Errorf("RuntimeDefault seccomp, %s: exit %d %q", name, st.ExitCode, out)
		}
	}
	// The filter does what it says: the default one refuses a new user
	// namespace to a process without CAP_SYS_ADMIN, which the kernel
	// allows without one.
	for name, sc := range map[string]*runtimeapi.SecurityProfile{
		"blocked": {ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
		"allowed": nil,
	} {
		cfg := ctrConfig("userns-"+name, e.image("plain"), "sh", "-c", "unshare -U true 2>/dev/null && echo allowed || echo blocked")
		cfg.Linux.SecurityContext.Seccomp = sc
		if st, out := e.runToEnd(t, podID, pod, cfg); st.ExitCode != 0 || len(out) != 1 || out[0] != name {
			t.Errorf("unshare -U with seccomp %v: exit %d %q, want %s", sc, st.ExitCode, out, name)
		}
	}
	// An unset PID mode (POD, the zero value) in a pod without a shared
	// PID namespace: a namespace of the container's own.
	cfg := ctrConfig("pid-unset", e.image("plain"), "sh", "-c", "echo $$")
	cfg.Linux.SecurityContext.NamespaceOptions = nil
	if st, out := e.runToEnd(t, podID, pod, cfg); st.ExitCode != 0 || len(out) != 1 || out[0] != "1" {
		t.Errorf("unset PID mode: exit %d, pid %q", st.ExitCode, out)
	}
	// A debug container targeting another sees its processes.
	target := e.run(t, podID, pod, ctrConfig("target", e.image("plain"), "sleep", "300"))
	dbg := ctrConfig("debug", e.image("plain"), "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '")
	dbg.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: target}
	if st, out := e.runToEnd(t, podID, pod, dbg); st.ExitCode != 0 || len(out) != 1 || !strings.HasPrefix(out[0], "sleep 300") {
		t.Errorf("TARGET PID mode: exit %d, PID 1 is %q", st.ExitCode, out)
	}
}

func TestNoMountIntoProc(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "procmount")
	cfg := ctrConfig("proc", e.image("plain"), "ls", "/proc/self/fd")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/proc/self/fd", HostPath: t.TempDir()}}
	id := e.create(t, podID, pod, cfg)
	_, err := e.d.runtime.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: id})
	if err == nil || !strings.Contains(err.Error(), "/proc") {
		t.Errorf("a mount into /proc: %v", err)
	}
	// A tty container holds only its terminal.
	tty := ctrConfig("tty", e.image("plain"), "ls", "/proc/self/fd")
	tty.Tty = true
	st, out := e.runToEnd(t, podID, pod, tty)
	// A terminal ends lines with \r\n; ls lays its output out in columns.
	if fds := strings.Fields(strings.ReplaceAll(strings.Join(out, " "), "\r", "")); st.ExitCode != 0 || strings.Join(fds, " ") != "0 1 2 3" {
		t.Errorf("tty container: exit %d, fds %q", st.ExitCode, out)
	}
}

// What a container's first process leaves running does not keep it
// running, nor survives its stop.
func TestLeftoverProcessesAreKilledOnStop(t *testing.T) {
	e := newCtrEnv(t)
	shared := podConfig("leftover")
	shared.LogDirectory = filepath.Join(e.logs, "leftover")
	shared.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	podID := runPod(t, e.d, shared)
	cfg := ctrConfig("parent", e.image("plain"), "sh", "-c", "(while true; do echo bg; sleep 0.5; done) & exit 0")
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	id := e.run(t, podID, shared, cfg)
	// The monitor stops reading 2 s after the first process ended, even
	// though the background loop still writes.
	st := e.waitExited(t, id)
	if st.ExitCode != 0 {
		t.Errorf("exit %d", st.ExitCode)
	}
	if _, err := e.d.runtime.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if l := countContainerLeaks(t, e.d); l.Monitors != 0 {
		t.Errorf("monitors left: %+v", l)
	}
	out, _ := exec.Command("pgrep", "-f", "while true; do echo bg").Output()
	if strings.TrimSpace(string(out)) != "" {
		t.Errorf("the background loop survived the stop: %s", out)
	}
}

// A monitor killed under a running container: the container keeps
// running (unlogged) until it is stopped, which kills it.
func TestKilledMonitor(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "monitorless")
	id := e.run(t, podID, pod, ctrConfig("orphan", e.image("plain"), "sleep", "300"))
	mons, _ := exec.Command("pgrep", "-f", "monitor --state "+filepath.Join(e.d.root, "containers", id)).Output()
	if len(strings.Fields(string(mons))) != 1 {
		t.Fatalf("monitor of the container: %q", mons)
	}
	// ps shows what it is, not the descriptor husk-runtime ran from.
	if comm, _ := os.ReadFile("/proc/" + strings.TrimSpace(string(mons)) + "/comm"); string(comm) != "husk-monitor\n" {
		t.Errorf("the monitor's name: %q", comm)
	}
	_ = exec.Command("kill", "-9", strings.TrimSpace(string(mons))).Run()
	time.Sleep(100 * time.Millisecond)
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("with its monitor killed: %v", st.State)
	}
	if _, err := e.d.runtime.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Errorf("after stop: %v", st.State)
	}
	out, _ := exec.Command("pgrep", "-x", "sleep").Output()
	for _, pid := range strings.Fields(string(out)) {
		cg, _ := os.ReadFile("/proc/" + pid + "/cgroup")
		if strings.Contains(string(cg), id) {
			t.Errorf("the container's process %s survived the stop", pid)
		}
	}
}

// ListContainers reads no file for a container whose monitor and exit are
// watched (sandbox/exitwatch.go): its exit still shows in the list without
// a status call, whether the container ends (its monitor records the
// exit), its monitor is killed first (the monitor's pidfd says so), or
// the daemon was restarted in between (the watches are made again).
func TestListSeesExitsWithoutStatus(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "listed")
	listed := func(id string) *runtimeapi.Container {
		resp, err := e.d.runtime.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
		if err != nil || len(resp.Containers) != 1 {
			t.Fatalf("ListContainers %s: %v, %d containers", id, err, len(resp.GetContainers()))
		}
		return resp.Containers[0]
	}
	waitListedExited := func(what, id string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for listed(id).State != runtimeapi.ContainerState_CONTAINER_EXITED {
			if time.Now().After(deadline) {
				t.Fatalf("%s: ListContainers still says %v", what, listed(id).State)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	monitorOf := func(id string) string {
		out, _ := exec.Command("pgrep", "-f", "monitor --state "+filepath.Join(e.d.root, "containers", id)).Output()
		return strings.TrimSpace(string(out))
	}

	// Its process, found by its cgroup, for a kill from the host: PID 1
	// of its namespace ignores a signal it has no handler for.
	killSleep := func(id string) {
		out, _ := exec.Command("pgrep", "-x", "sleep").Output()
		for _, pid := range strings.Fields(string(out)) {
			if cg, _ := os.ReadFile("/proc/" + pid + "/cgroup"); strings.Contains(string(cg), id) {
				_ = exec.Command("kill", "-9", pid).Run()
				return
			}
		}
		t.Fatalf("no sleep process of container %s", id)
	}

	ends := e.run(t, podID, pod, ctrConfig("ends", e.image("plain"), "sh", "-c", "sleep 1; exit 3"))
	orphan := e.run(t, podID, pod, ctrConfig("orphan", e.image("plain"), "sleep", "300"))
	afterRestart := e.run(t, podID, pod, ctrConfig("restarted", e.image("plain"), "sleep", "300"))
	for _, id := range []string{orphan, afterRestart} {
		if st := listed(id).State; st != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Fatalf("%s listed as %v", id, st)
		}
	}
	waitListedExited("a container that ended", ends)
	if c := e.status(t, ends); c.ExitCode != 3 {
		t.Errorf("exit code %d, want 3", c.ExitCode)
	}

	mon := monitorOf(orphan)
	if mon == "" {
		t.Fatal("no monitor for the container")
	}
	_ = exec.Command("kill", "-9", mon).Run()
	time.Sleep(200 * time.Millisecond)
	if st := listed(orphan).State; st != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("with only its monitor killed: %v", st)
	}
	killSleep(orphan)
	waitListedExited("a container whose monitor was killed first", orphan)

	e.d.restart()
	if st := listed(afterRestart).State; st != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("after the restart: %v", st)
	}
	killSleep(afterRestart)
	waitListedExited("a container ended after a daemon restart", afterRestart)
}

// oom_score_adj below the daemon's own cannot be set without
// CAP_SYS_RESOURCE: it is clamped, not a failure; above, it is kept.
func TestOOMScoreAdjIsClamped(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "oomadj")
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", e.d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	own, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	// Below the daemon's own: clamped to it. Above: kept.
	cases := map[int64]int{int64(max(own-1, -1000)): own, int64(min(own+1, 1000)): min(own+1, 1000)}
	for adj, want := range cases {
		cfg := ctrConfig(fmt.Sprintf("adj%d", adj+1000), e.image("plain"), "cat", "/proc/self/oom_score_adj")
		cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{OomScoreAdj: adj}
		st, out := e.runToEnd(t, podID, pod, cfg)
		if st.ExitCode != 0 || len(out) != 1 || out[0] != strconv.Itoa(want) {
			t.Errorf("oom_score_adj %d with the daemon at %d: exit %d, %q; want %d", adj, own, st.ExitCode, out, want)
		}
	}
}

// A Bidirectional volume: what the container mounts in it shows on the
// host, and the container starts (its rootfs stays private for
// pivot_root).
func TestBidirectionalVolume(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "bidi")
	vol := t.TempDir()
	// Propagation needs a shared mount on the host side.
	if err := syscall.Mount(vol, vol, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(vol, syscall.MNT_DETACH) })
	if err := syscall.Mount("", vol, "", syscall.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	cfg := ctrConfig("bidi", e.image("plain"), "sh", "-c", "mkdir -p /vol/sub && mount -t tmpfs tmpfs /vol/sub && echo hi > /vol/sub/file && sleep 300")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol, Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL}}
	cfg.Linux.SecurityContext.Privileged = true
	id := e.run(t, podID, pod, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(vol, "sub", "file"))
		if err == nil && string(b) == "hi\n" {
			break
		}
		if time.Now().After(deadline) {
			st := e.status(t, id)
			pid, _ := e.d.runtime.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
			t.Logf("info %s", pid.GetInfo()["info"][:80])
			var info struct{ Pid int }
			_ = json.Unmarshal([]byte(pid.GetInfo()["info"]), &info)
			mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", info.Pid))
			self, _ := os.ReadFile("/proc/self/mountinfo")
			t.Fatalf("the container's mount did not reach the host: %v; container %v, stderr %q\ncontainer:\n%s\nhost:\n%s", err, st.State, output(t, st.LogPath, "stderr"), mi, self)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := e.d.runtime.RemoveContainer(context.Background(), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	_ = syscall.Unmount(filepath.Join(vol, "sub"), syscall.MNT_DETACH)
}

// A privileged container has the host's device nodes in its /dev (as with
// containerd and CRI-O); another has the default ones only.
func TestPrivilegedContainerHasTheHostsDevices(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "devices")
	script := "if [ -c /dev/kmsg ]; then stat -c '%t,%T' /dev/kmsg; else echo none; fi; ls /dev/pts | grep -c . ; test ! -e /dev/console && echo no-console"
	for name, privileged := range map[string]bool{"privileged": true, "plain": false} {
		cfg := ctrConfig(name, e.image("plain"), "sh", "-c", script)
		cfg.Linux.SecurityContext.Privileged = privileged
		st, out := e.runToEnd(t, podID, pod, cfg)
		want := []string{"none", "1", "no-console"}
		if privileged {
			want[0] = "1,b" // /dev/kmsg is 1:11
		}
		if st.ExitCode != 0 || !slices.Equal(out, want) {
			t.Errorf("%s: exit %d %q, want %q", name, st.ExitCode, out, want)
		}
	}
}

// What runs husk for a container (its monitor) runs a sealed in-memory
// copy, which cannot be written (CVE-2019-5736), not the binary on disk.
func TestHuskBinaryCannotBeOverwrittenThroughContainerProcesses(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "sealed")
	id := e.run(t, podID, pod, ctrConfig("sleeper", e.image("plain"), "sleep", "300"))
	mon, err := exec.Command("pgrep", "-f", "monitor --state "+filepath.Join(e.d.root, "containers", id)).Output()
	if err != nil {
		t.Fatal(err)
	}
	exe := "/proc/" + strings.TrimSpace(string(mon)) + "/exe"
	target, _ := os.Readlink(exe)
	if !strings.HasPrefix(target, "/memfd:husk-runtime") {
		t.Errorf("the monitor runs %q, want the sealed memfd copy", target)
	}
	if f, err := os.OpenFile(exe, os.O_WRONLY, 0); err == nil {
		_ = f.Close()
		t.Error("the monitor's binary can be opened for writing")
	}
	if f, err := os.OpenFile(exe, os.O_RDWR|os.O_TRUNC, 0); err == nil {
		_ = f.Close()
		t.Error("the monitor's binary can be truncated")
	}
}

// Read-only root filesystem and a recursively read-only volume: nothing
// under either can be written, submounts included.
func TestReadOnlyRootfsAndRecursiveReadOnlyVolume(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "readonly")
	vol := t.TempDir()
	sub := filepath.Join(vol, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", sub, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(sub, syscall.MNT_DETACH) })
	cfg := ctrConfig("ro", e.image("plain"), "sh", "-c", "touch /x 2>/dev/null && echo root-writable; touch /vol/sub/x 2>/dev/null && echo sub-writable; echo done")
	cfg.Linux.SecurityContext.ReadonlyRootfs = true
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol, Readonly: true, RecursiveReadOnly: true}}
	st, out := e.runToEnd(t, podID, pod, cfg)
	if st.ExitCode != 0 || len(out) != 1 || out[0] != "done" {
		t.Errorf("writes in read-only places: exit %d, %q", st.ExitCode, out)
	}
}

// Removing an image that a container uses keeps the layers the container
// runs from; a container created before a daemon restart starts after it.
func TestImageRemovalAndRestartDoNotBreakContainers(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "inuse")
	created := e.create(t, podID, pod, ctrConfig("later", e.image("plain"), "sh", "-c", "echo started-after-restart"))
	running := e.run(t, podID, pod, ctrConfig("running", e.image("plain"), "sleep", "300"))
	if _, err := e.d.images.RemoveImage(context.Background(), &runtimeapi.RemoveImageRequest{Image: e.image("plain")}); err != nil {
		t.Fatal(err)
	}
	e.d.restart()
	e.start(t, created)
	st := e.waitExited(t, created)
	if out := output(t, st.LogPath, "stdout"); st.ExitCode != 0 || len(out) != 1 || out[0] != "started-after-restart" {
		t.Errorf("container created before the restart: exit %d, %q", st.ExitCode, out)
	}
	if st := e.status(t, running); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("running container after the image removal and restart: %v", st.State)
	}
}

// firstLine starts cmd and returns the first line it prints on stdout,
// then kills it; an error if it prints none within limit.
func firstLine(cmd *exec.Cmd, limit time.Duration) (string, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	got := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			got <- sc.Text()
		}
		close(got)
	}()
	select {
	case line, ok := <-got:
		if !ok {
			return "", errors.New("no output")
		}
		return line, nil
	case <-time.After(limit):
		return "", fmt.Errorf("no line within %v", limit)
	}
}
