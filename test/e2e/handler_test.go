package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// A RuntimeClass handler run by runc, or crun (Debian's, which `make deps`
// installs): the pod is husk's, its containers are the runtime's, under
// husk's monitor (logs, exit codes), and exec joins them as husk's own.
func TestRuncRuntimeHandler(t *testing.T) { testRuntimeHandler(t, "runc") }

func TestCrunRuntimeHandler(t *testing.T) {
	if why := crunUnusable(); why != "" {
		t.Skip(why)
	}
	testRuntimeHandler(t, "crun")
}

// crunUnusable says why Debian 12's crun (1.8.1) can run no container on
// this host, or "": it refuses hybrid cgroups with a controller on the v2
// side, as this development machine has (hugetlb). make vm-test runs the
// crun tests in a guest with pure cgroup v2.
func crunUnusable() string {
	if unifiedHost {
		return ""
	}
	b, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
	if err != nil || strings.TrimSpace(string(b)) == "" {
		return ""
	}
	return "crun 1.8 refuses hybrid cgroups whose v2 side has controllers (here: " + strings.TrimSpace(string(b)) + "); make vm-test runs it on pure cgroup v2"
}

func testRuntimeHandler(t *testing.T, name string) {
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (make deps installs it)", name)
	}
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "busybox:plain", imagetest.BusyboxImage(t, v1.Config{}))
	d := newDaemon(t, insecureConfig(reg.Host)+"[runtimes."+name+"]\npath = \""+path+"\"\n")
	newPodNet(t, d).install(t, d)
	pullImage(t, d, reg.Ref("busybox:plain"))
	e := &ctrEnv{d: d, reg: reg, logs: t.TempDir()}
	ctx := context.Background()
	before := countContainerLeaks(t, d)

	st, err := d.runtime.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil || len(st.RuntimeHandlers) != 2 || st.RuntimeHandlers[1].Name != name || st.RuntimeHandlers[1].Features.GetUserNamespaces() {
		t.Fatalf("Status handlers: %v, %v", st.GetRuntimeHandlers(), err)
	}

	cfg := podConfig(name + "-pod")
	cfg.LogDirectory = filepath.Join(e.logs, name+"-pod")
	resp, err := d.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: name})
	if err != nil {
		t.Fatal(err)
	}
	podID := resp.PodSandboxId
	if ps, _ := podStatus(t, d, podID); ps.RuntimeHandler != name {
		t.Errorf("pod status handler %q", ps.RuntimeHandler)
	}
	app := ctrConfig("app", e.image("plain"), "sh", "-c", "trap 'exit 3' TERM; echo hello from the runtime; while :; do sleep 0.1; done")
	// With the hugepage limits kubelet sends for every page size the node
	// has, whether or not the hugetlb controller is there (runc refused
	// the container where it is not).
	app.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000,
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}, {PageSize: "1GB", Limit: 0}}}
	id := e.run(t, podID, cfg, app)
	waitFor(t, func() bool {
		out := output(t, filepath.Join(cfg.LogDirectory, "app.log"), "stdout")
		return len(out) > 0 && out[0] == "hello from the runtime"
	})
	// The runtime, under husk's monitor, runs it.
	mon, _ := exec.Command("pgrep", "-f", "^husk-runtime monitor --state "+filepath.Join(d.root, "containers", id)).Output()
	children, _ := os.ReadFile("/proc/" + strings.TrimSpace(string(mon)) + "/task/" + strings.TrimSpace(string(mon)) + "/children")
	cmdline, _ := os.ReadFile("/proc/" + strings.TrimSpace(string(children)) + "/cmdline")
	if !strings.Contains(string(cmdline), name) {
		t.Errorf("the monitor's child is %q, not %s", cmdline, name)
	}
	// Exec joins the container: the pod's hostname and network, the
	// container's processes.
	x, err := d.runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "hostname; ls /sys/class/net; cat /proc/1/comm"}, Timeout: 10})
	if err != nil || x.ExitCode != 0 {
		t.Fatalf("ExecSync: %v %v %q", x, err, x.GetStderr())
	}
	if out := strings.Fields(string(x.Stdout)); len(out) < 3 || out[0] != name+"-pod" || !strings.Contains(string(x.Stdout), "eth0") || out[len(out)-1] != "sh" {
		t.Errorf("exec in the %s container: %q", name, x.Stdout)
	}
	// The container sees its own limits, in its cgroup, and a resize.
	quota := func() string {
		file := "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"
		if unifiedHost {
			file = "/sys/fs/cgroup/cpu.max" // "QUOTA PERIOD"
		}
		x, err := d.runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"cat", file}, Timeout: 10})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(x.Stdout) + " ")[0]
	}
	if q := quota(); q != "50000" {
		t.Errorf("the container's CPU quota as it sees it: %q", q)
	}
	if _, err := d.runtime.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 70000}}); err != nil {
		t.Fatal(err)
	}
	if q := quota(); q != "70000" {
		t.Errorf("the CPU quota after a resize: %q", q)
	}
	// An exec is in the container's cgroup, runc's, under its device
	// rules: a block device of the host made there cannot be read.
	var root syscall.Stat_t
	if err := syscall.Stat("/", &root); err != nil {
		t.Fatal(err)
	}
	disk := fmt.Sprintf("mknod /tmp/disk b %d %d && head -c 1 /tmp/disk", unix.Major(root.Dev), unix.Minor(root.Dev))
	// On v1 the exec sees runc's cgroup by its path; on v2 it has the
	// container's cgroup namespace, whose root is runc's cgroup ("/",
	// where husk's cgroup above would be "/..").
	inRuncs := func(out string) bool { return !strings.HasPrefix(out, "0") }
	cgroupCmd := "grep -c /runtime /proc/self/cgroup; "
	if unifiedHost {
		inRuncs = func(out string) bool { return strings.HasPrefix(out, "0::/\n") }
		cgroupCmd = "cat /proc/self/cgroup; "
	}
	x, err = d.runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", cgroupCmd + disk}, Timeout: 10})
	if err != nil || x.ExitCode == 0 || !inRuncs(string(x.Stdout)) || !strings.Contains(string(x.Stderr), "not permitted") {
		t.Errorf("exec's cgroup and devices: exit %d, %q, %q, %v", x.GetExitCode(), x.GetStdout(), x.GetStderr(), err)
	}
	// Through a daemon killed with SIGKILL: runc's container goes on, and
	// exec finds it again.
	_ = d.stop(syscall.SIGKILL)
	d.start()
	if x, err := d.runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"hostname"}, Timeout: 10}); err != nil || string(x.Stdout) != name+"-pod\n" {
		t.Fatalf("ExecSync after a restart: %q %v", x.GetStdout(), err)
	}
	// The runtime itself killed (the host's OOM killer may choose it):
	// the container goes on, still running for husk, and is stopped as
	// usual.
	runtimePID, _ := strconv.Atoi(strings.TrimSpace(string(children)))
	if err := syscall.Kill(runtimePID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return syscall.Kill(runtimePID, 0) != nil })
	if cs := e.status(t, id); cs.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("after %s was killed: %v", name, cs.State)
	}
	if x, err := d.runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"hostname"}, Timeout: 10}); err != nil || string(x.Stdout) != name+"-pod\n" {
		t.Fatalf("ExecSync after %s was killed: %q %v", name, x.GetStdout(), err)
	}
	if _, err := d.runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 5}); err != nil {
		t.Fatal(err)
	}
	// The stop signal reached the container's shell, through the runtime.
	if cs := e.status(t, id); cs.State != runtimeapi.ContainerState_CONTAINER_EXITED || cs.ExitCode != 3 {
		t.Errorf("after StopContainer: %v exit %d", cs.State, cs.ExitCode)
	}
	// Privileged, and a volume with propagation from the host.
	priv := ctrConfig("priv", e.image("plain"), "sh", "-c", "hostname husk-set && cat /vol/f")
	priv.Linux.SecurityContext.Privileged = true
	vol := t.TempDir()
	if err := os.WriteFile(filepath.Join(vol, "f"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	priv.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}}
	pcs, pout := e.runToEnd(t, podID, cfg, priv)
	if pcs.ExitCode != 0 || len(pout) == 0 || pout[0] != "from the host" {
		t.Errorf("privileged under %s: exit %d, %q, stderr %q", name, pcs.ExitCode, pout, output(t, pcs.LogPath, "stderr"))
	}
	// The kernel's OOM kill is told as such.
	hog := ctrConfig("hog", e.image("plain"), "sh", "-c", "x=a; while true; do x=$x$x; done")
	hog.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}
	if hs, _ := e.runToEnd(t, podID, cfg, hog); hs.ExitCode != 137 || hs.Reason != "OOMKilled" {
		t.Errorf("a memory hog under %s: exit %d, reason %q", name, hs.ExitCode, hs.Reason)
	}
	// A command that does not exist: the runtime fails, and says so in
	// the log (runc "no such file", crun "No such file").
	bad := e.create(t, podID, cfg, ctrConfig("bad", e.image("plain"), "/no/such/command"))
	if _, err := d.runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: bad}); err == nil || !strings.Contains(err.Error(), name) {
		t.Errorf("starting a missing command under %s: %v", name, err)
	}
	if logged := strings.Join(output(t, filepath.Join(cfg.LogDirectory, "bad.log"), "stderr"), "\n"); !strings.Contains(strings.ToLower(logged), "no such file") {
		t.Errorf("%s's error is not in the log: %q", name, logged)
	}

	// What the runtime cannot do for husk is refused, naming the field.
	userns := podConfig(name + "-userns")
	userns.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: usernsOptions(runtimeapi.NamespaceMode_POD, usernsHost)}}
	for what, req := range map[string]*runtimeapi.RunPodSandboxRequest{
		"unknown handler": {Config: podConfig("kata"), RuntimeHandler: "kata"},
		"user namespace":  {Config: userns, RuntimeHandler: name},
	} {
		if _, err := d.runtime.RunPodSandbox(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v", what, err)
		}
	}
	// Recursive read-only mounts where the runtime's `features` offers
	// them (runc), refused where it does not (crun 1.8 has no `features`).
	vol = t.TempDir()
	sub := filepath.Join(vol, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(sub, syscall.MNT_DETACH) })
	rro := ctrConfig("rro", e.image("plain"), "sh", "-c", "touch /data/sub/f && echo writable || echo read-only")
	rro.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: vol, Readonly: true, RecursiveReadOnly: true}}
	if st.RuntimeHandlers[1].Features.GetRecursiveReadOnlyMounts() {
		if rs, out := e.runToEnd(t, podID, cfg, rro); rs.ExitCode != 0 || len(out) == 0 || out[0] != "read-only" {
			t.Errorf("a recursive read-only mount under %s: exit %d, %q", name, rs.ExitCode, out)
		}
	} else if _, err := d.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: rro, SandboxConfig: cfg}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "recursive_read_only") {
		t.Errorf("recursive read-only under %s, which does not offer it: %v", name, err)
	}
	if want := name == "runc" && st.RuntimeHandlers[0].Features.GetRecursiveReadOnlyMounts(); st.RuntimeHandlers[1].Features.GetRecursiveReadOnlyMounts() != want {
		t.Errorf("%s offers recursive read-only mounts: Status says %v, want %v (runc's features say so, crun 1.8 has none)", name, !want, want)
	}

	stopPod(t, d, podID)
	removePod(t, d, podID)
	if after := countContainerLeaks(t, d); after != before {
		t.Errorf("left behind: %+v, before %+v", after, before)
	}
	if entries, _ := os.ReadDir(filepath.Join(d.state, "runtimes", name)); len(entries) != 0 {
		t.Errorf("%s's state is left: %d entries", name, len(entries))
	}
}
