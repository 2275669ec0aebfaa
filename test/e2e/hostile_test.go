package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// An exec probe that writes without end must not grow the daemon
// (containerd's CVE-2022-31030): ExecSync keeps 1 MiB of each stream and
// still returns the exit code; a streamed exec is copied with backpressure.
func TestExecOutputDoesNotGrowTheDaemon(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "flood")
	id := e.run(t, podID, pod, ctrConfig("target", e.image("plain"), "sleep", "300"))
	pid := e.d.cmd.Process.Pid
	// A first small exec: what every exec needs is in the idle figure.
	if _, err := e.exec(t, id, 30, "true"); err != nil {
		t.Fatal(err)
	}
	idle := statusKiB(t, pid, "VmRSS")
	resp, err := e.exec(t, id, 120, "sh", "-c", "head -c 300000000 /dev/zero; head -c 9000000 /dev/zero >&2; exit 7")
	peak := statusKiB(t, pid, "VmHWM")
	t.Logf("daemon RSS idle %.0f KiB, peak during a 300 MB ExecSync %.0f KiB", idle, peak)
	if err != nil {
		t.Fatalf("ExecSync of 300 MB: %v", err)
	}
	if resp.ExitCode != 7 || len(resp.Stdout) != 1<<20 || len(resp.Stderr) != 1<<20 {
		t.Errorf("ExecSync of 300 MB: exit %d, %d bytes of stdout, %d of stderr; want 7 and 1 MiB of each", resp.ExitCode, len(resp.Stdout), len(resp.Stderr))
	}
	if peak-idle > 24<<10 {
		t.Errorf("the daemon grew from %.0f KiB to a peak of %.0f KiB during a 300 MB ExecSync", idle, peak)
	}

	// Streamed: crictl reads it all, the daemon holds none of it.
	cmd := e.d.crictlCommand(t.Context(), "exec", id, "head", "-c", "300000000", "/dev/zero")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil || n != 300000000 {
		t.Errorf("crictl exec of 300 MB: %d bytes, %v", n, err)
	}
	peak = statusKiB(t, pid, "VmHWM")
	t.Logf("daemon peak RSS after a streamed 300 MB exec %.0f KiB", peak)
	if peak-idle > 24<<10 {
		t.Errorf("the daemon grew from %.0f KiB to a peak of %.0f KiB during a streamed 300 MB exec", idle, peak)
	}
}

// A container's log is written below its pod's log_directory and nowhere
// else: no "..", no symlink planted there followed, to a file or a
// directory, at create, start or reopen.
func TestLogsStayInTheirDirectory(t *testing.T) {
	e := newCtrEnv(t)
	outside := t.TempDir()
	target := filepath.Join(outside, "target")
	if err := os.WriteFile(target, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	podID, pod := e.pod(t, "logs-escape")
	logDir := pod.LogDirectory
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}

	cfg := ctrConfig("dotdot", e.image("plain"), "echo", "hi")
	cfg.LogPath = "../../escape.log"
	_, err := e.d.runtime.CreateContainer(t.Context(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	wantCode(t, err, codes.InvalidArgument, "config.log_path")

	// A symlink to a file of the host: the container does not start,
	// and the file is as it was.
	if err := os.Symlink(target, filepath.Join(logDir, "planted.log")); err != nil {
		t.Fatal(err)
	}
	cfg = ctrConfig("planted", e.image("plain"), "echo", "overwritten")
	cfg.LogPath = "planted.log"
	id := e.create(t, podID, pod, cfg)
	_, err = e.d.runtime.StartContainer(t.Context(), &runtimeapi.StartContainerRequest{ContainerId: id})
	if err == nil {
		e.waitExited(t, id)
		t.Error("a container whose log path is a symlink started")
	}
	// A symlink to a directory of the host.
	if err := os.Symlink(outside, filepath.Join(logDir, "sub")); err != nil {
		t.Fatal(err)
	}
	cfg = ctrConfig("subdir", e.image("plain"), "echo", "hi")
	cfg.LogPath = "sub/0.log"
	_, err = e.d.runtime.CreateContainer(t.Context(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	wantCode(t, err, codes.FailedPrecondition, "")

	// A symlink planted where a rotated log was: the monitor keeps its
	// old file rather than follow it.
	cfg = ctrConfig("rotated", e.image("plain"), "sh", "-c", "while true; do echo tick; sleep 0.1; done")
	cfg.LogPath = "rotated.log"
	id = e.run(t, podID, pod, cfg)
	logPath := filepath.Join(logDir, "rotated.log")
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, logPath); err != nil {
		t.Fatal(err)
	}
	_, err = e.d.runtime.ReopenContainerLog(t.Context(), &runtimeapi.ReopenContainerLogRequest{ContainerId: id})
	wantCode(t, err, codes.FailedPrecondition, "")
	time.Sleep(300 * time.Millisecond)
	if b, _ := os.ReadFile(target); string(b) != "precious\n" {
		t.Errorf("the file a planted symlink names holds %q", b)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("the directory a planted symlink names holds %d entries, want 1", len(entries))
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(logDir)), "escape.log")); err == nil {
		t.Error("a log was written two directories up")
	}

	// log_directory must be absolute.
	rel := podConfig("relative-logs")
	rel.LogDirectory = "relative/logs"
	_, err = e.d.runtime.RunPodSandbox(t.Context(), &runtimeapi.RunPodSandboxRequest{Config: rel})
	wantCode(t, err, codes.InvalidArgument, "config.log_directory")
}

// wantCode checks an error's gRPC code, and that its message names field.
func wantCode(t *testing.T, err error, code codes.Code, field string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), field) {
		t.Errorf("want %v naming %q, got %v", code, field, err)
	}
}

// Requests the kernel, exec or CNI would refuse half-way are refused
// before anything is made, naming their field, and leave nothing behind.
func TestBadRequestsAreRefusedAndLeaveNothing(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "good")
	running := e.run(t, podID, pod, ctrConfig("running", e.image("plain"), "sleep", "300"))
	before, beforeCtr := countLeaks(t, e.d), countContainerLeaks(t, e.d)

	pods := []struct {
		field  string
		change func(*runtimeapi.PodSandboxConfig)
	}{
		{"config.metadata.name", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Name = strings.Repeat("n", 1<<20) }},
		{"config.metadata.name", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Name = "bad\x00name" }},
		{"config.metadata.namespace", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Namespace = "a\nb" }},
		{"config.metadata.uid", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Uid = strings.Repeat("u", 1<<20) }},
		{"config.labels", func(p *runtimeapi.PodSandboxConfig) { p.Labels = map[string]string{"l": strings.Repeat("v", 8<<20)} }},
		{"config.annotations", func(p *runtimeapi.PodSandboxConfig) {
			p.Annotations = map[string]string{"a": strings.Repeat("v", 9<<20)}
		}},
		{"linux.sysctls[net.ipv4]", func(p *runtimeapi.PodSandboxConfig) { p.Linux.Sysctls = map[string]string{"net.ipv4": "1"} }},
		{"config.linux.cgroup_parent", func(p *runtimeapi.PodSandboxConfig) { p.Linux.CgroupParent = "/husk-e2e\n/x" }},
		{"config.linux.resources.memory_limit_in_bytes", func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -1}
		}},
		{"config.linux.security_context.namespace_options.network", func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.SecurityContext.NamespaceOptions.Network = 42
		}},
		{"config.port_mappings[0].protocol", func(p *runtimeapi.PodSandboxConfig) {
			p.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 31999, Protocol: 99}}
		}},
		{"config.port_mappings[0].host_ip", func(p *runtimeapi.PodSandboxConfig) {
			p.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 31999, HostIp: "999.1.1.1"}}
		}},
		{"config.linux.security_context.seccomp.localhost_ref", func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/var/lib/../../etc/shadow"}
		}},
	}
	for i, c := range pods {
		cfg := podConfig(fmt.Sprintf("bad-%d", i))
		c.change(cfg)
		_, err := e.d.runtime.RunPodSandbox(t.Context(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
		wantCode(t, err, codes.InvalidArgument, c.field)
	}

	ctrs := []struct {
		field  string
		change func(*runtimeapi.ContainerConfig)
	}{
		{"config.metadata.name", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "a/b" }},
		{"config.command[2]", func(c *runtimeapi.ContainerConfig) { c.Command = []string{"echo", "x", strings.Repeat("a", 4<<20)} }},
		{"config.linux.resources.cpu_period", func(c *runtimeapi.ContainerConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuPeriod: 1}
		}},
		{"config.linux.resources.cpuset_cpus", func(c *runtimeapi.ContainerConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpusetCpus: "99999"}
		}},
		{"config.linux.resources.memory_swap_limit_in_bytes", func(c *runtimeapi.ContainerConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{MemorySwapLimitInBytes: -2}
		}},
		{"config.linux.security_context.supplemental_groups", func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext.SupplementalGroups = make([]int64, 70000)
		}},
	}
	for i, c := range ctrs {
		cfg := ctrConfig(fmt.Sprintf("bad-%d", i), e.image("plain"), "true")
		c.change(cfg)
		_, err := e.d.runtime.CreateContainer(t.Context(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		wantCode(t, err, codes.InvalidArgument, c.field)
	}

	// A command the image does not have.
	missing := e.create(t, podID, pod, ctrConfig("missing", e.image("plain"), "no-such-command"))
	_, err := e.d.runtime.StartContainer(t.Context(), &runtimeapi.StartContainerRequest{ContainerId: missing})
	wantCode(t, err, codes.InvalidArgument, "config.command")
	// A memory limit below what the container uses: the state's fault.
	_, err = e.d.runtime.UpdateContainerResources(t.Context(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: running, Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1}})
	wantCode(t, err, codes.FailedPrecondition, "")
	_, err = e.d.runtime.UpdateContainerResources(t.Context(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: running, Linux: &runtimeapi.LinuxContainerResources{CpuShares: -4}})
	wantCode(t, err, codes.InvalidArgument, "linux.cpu_shares")
	_, err = e.d.runtime.UpdatePodSandboxResources(t.Context(), &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: podID, Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -64}})
	wantCode(t, err, codes.InvalidArgument, "resources.memory_limit_in_bytes")
	if _, err := e.exec(t, running, 10, "true"); err != nil {
		t.Errorf("the container after refused updates: %v", err)
	}
	if _, err := e.d.runtime.RemoveContainer(t.Context(), &runtimeapi.RemoveContainerRequest{ContainerId: missing}); err != nil {
		t.Fatal(err)
	}

	if after := countLeaks(t, e.d); after != before {
		t.Errorf("refused pods left something:\nbefore %+v\nafter  %+v", before, after)
	}
	if after := countContainerLeaks(t, e.d); after != beforeCtr {
		t.Errorf("refused containers left something:\nbefore %+v\nafter  %+v", beforeCtr, after)
	}
	// Every refusal that was not NotFound/AlreadyExists is in the log,
	// with its method and code.
	log := e.d.log()
	for _, want := range []string{`method="/runtime.v1.RuntimeService/RunPodSandbox"`, `code="InvalidArgument"`, `code="FailedPrecondition"`} {
		if !strings.Contains(log, want) {
			t.Errorf("the daemon's log has no %s", want)
		}
	}
}

// No pod can make ListPodSandbox too large for a kubelet: each pod's
// labels and annotations are bounded, and so is their sum over the node.
func TestListStaysWithinWhatAKubeletTakes(t *testing.T) {
	d, _ := newPodDaemon(t)
	big := strings.Repeat("v", 250<<10)
	var refused error
	for i := range 60 {
		cfg := podConfig(fmt.Sprintf("heavy-%d", i))
		cfg.Annotations = map[string]string{"a": big}
		cfg.Labels = map[string]string{"l": big[:60<<10]}
		if _, err := d.runtime.RunPodSandbox(t.Context(), &runtimeapi.RunPodSandboxRequest{Config: cfg}); err != nil {
			refused = err
			break
		}
	}
	wantCode(t, refused, codes.ResourceExhausted, "List answers")
	// As a kubelet, which takes answers of up to 16 MiB.
	list, err := d.runtime.ListPodSandbox(t.Context(), &runtimeapi.ListPodSandboxRequest{}, grpc.MaxCallRecvMsgSize(16<<20))
	if err != nil {
		t.Fatalf("ListPodSandbox with the node full of heavy pods: %v", err)
	}
	if !strings.Contains(d.log(), `code="ResourceExhausted"`) {
		t.Error("the refusal is not in the daemon's log")
	}
	for _, p := range list.Items {
		removePod(t, d, p.Id)
	}
	// Room again once they are gone.
	cfg := podConfig("after")
	cfg.Annotations = map[string]string{"a": big}
	runPod(t, d, cfg)
}
