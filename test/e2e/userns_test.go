package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// usernsHost is where the test's pods' ids start on the host, as kubelet
// gives a pod 65536 of its own.
const usernsHost = 1 << 20

func usernsOptions(mode runtimeapi.NamespaceMode, host uint32) *runtimeapi.UserNamespace {
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: host, Length: 65536}}
	return &runtimeapi.UserNamespace{Mode: mode, Uids: m, Gids: m}
}

// A pod with its own user namespace (hostUsers: false): its containers
// run as a root that is an unprivileged user of the host, see the image's
// files and their volumes as theirs (id-mapped mounts), and can still
// mount proc and sysfs and make their /dev.
func TestPodWithItsOwnUserNamespace(t *testing.T) {
	e := newCtrEnv(t)
	before := countContainerLeaks(t, e.d)

	st, err := e.d.runtime.Status(context.Background(), &runtimeapi.StatusRequest{})
	if err != nil || !st.RuntimeHandlers[0].GetFeatures().GetUserNamespaces() {
		t.Fatalf("Status does not offer user namespaces: %v %v", st, err)
	}

	cfg := podConfig("userns")
	cfg.LogDirectory = filepath.Join(e.logs, "userns")
	userns := usernsOptions(runtimeapi.NamespaceMode_POD, usernsHost)
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: userns}}
	podID := runPod(t, e.d, cfg)

	vol := t.TempDir()
	if err := os.WriteFile(filepath.Join(vol, "owned-by-host-root"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A volume that asks for no mapping keeps the host's owners: the
	// container's root cannot write the host root's file.
	plain := t.TempDir()
	if err := os.WriteFile(filepath.Join(plain, "host-file"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A read-only volume whose source is nosuid, nodev and noexec, flags
	// a user namespace cannot drop: a bind mount of a directory of the
	// test's filesystem with them (tmpfs is id-mapped only from Linux 6.3).
	locked := t.TempDir()
	if err := syscall.Mount(locked, locked, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("", locked, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		_ = syscall.Unmount(locked, syscall.MNT_DETACH)
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(locked, syscall.MNT_DETACH) })
	c := ctrConfig("root", e.image("plain"), "sh", "-c", strings.Join([]string{
		"cat /proc/self/uid_map /proc/self/gid_map",
		"id -u", "id -g",
		"stat -c '%u:%g' / /bin/busybox /vol/owned-by-host-root",
		"touch /made-inside /vol/made-inside",
		"echo $(ls /sys/class/net)",
		"test -c /dev/null && echo null-ok",
		"echo x >> /plain/host-file 2>/dev/null || echo plain-refused",
		"stat -c %u /img/bin/busybox",
		"cat /proc/self/oom_score_adj",
		"sleep 300",
	}, "; "))
	c.Linux.SecurityContext.NamespaceOptions.UsernsOptions = userns
	// kubelet sets one for every container (1000 for BestEffort).
	c.Linux.Resources = &runtimeapi.LinuxContainerResources{OomScoreAdj: 500}
	c.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/vol", HostPath: vol, UidMappings: userns.Uids, GidMappings: userns.Gids},
		{ContainerPath: "/plain", HostPath: plain},
		{ContainerPath: "/locked", HostPath: locked, Readonly: true, UidMappings: userns.Uids, GidMappings: userns.Gids},
		// kubelet puts the pod's mappings on image volumes too.
		{ContainerPath: "/img", Image: e.image("plain"), Readonly: true, UidMappings: userns.Uids, GidMappings: userns.Gids},
	}
	id := e.run(t, podID, cfg, c)
	logPath := filepath.Join(cfg.LogDirectory, c.LogPath)
	var out []string
	waitFor(t, func() bool {
		out = output(t, logPath, "stdout")
		return len(out) >= 12 || e.status(t, id).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	want := []string{
		"         0    1048576      65536", "         0    1048576      65536",
		"0", "0", "0:0", "0:0", "0:0", "eth0 lo", "null-ok", "plain-refused", "0", "500",
	}
	if len(out) < len(want) {
		t.Fatalf("container output %q, stderr %q", out, output(t, logPath, "stderr"))
	}
	for i, w := range want {
		if w != "" && strings.TrimSpace(out[i]) != strings.TrimSpace(w) {
			t.Errorf("line %d: %q, want %q (all: %q)", i, out[i], w, out)
		}
	}
	// On the host, what the container's root made in its root filesystem
	// belongs to the pod's first id; in the id-mapped volume, to the
	// host's root, as the volume's own files do.
	for p, want := range map[string]uint32{
		filepath.Join(e.d.root, "containers", id, "upper", "made-inside"): usernsHost,
		filepath.Join(vol, "made-inside"):                                 0,
	} {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil || st.Uid != want || st.Gid != want {
			t.Errorf("%s on the host: uid %d gid %d, %v; want %d", p, st.Uid, st.Gid, err, want)
		}
	}
	// An exec joins the user namespace too.
	resp, err := e.d.runtime.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "id -u; stat -c %u /made-inside; head -1 /proc/self/uid_map"}, Timeout: 10})
	if err != nil || resp.ExitCode != 0 {
		t.Fatalf("ExecSync: %v %v %s", resp, err, resp.GetStderr())
	}
	if got := strings.Fields(string(resp.Stdout)); len(got) != 5 || got[0] != "0" || got[1] != "0" || got[3] != "1048576" {
		t.Errorf("exec in the user namespace: %q", resp.Stdout)
	}

	// A container asking for other mappings than its pod's is refused.
	other := ctrConfig("other", e.image("plain"), "true")
	other.Linux.SecurityContext.NamespaceOptions.UsernsOptions = usernsOptions(runtimeapi.NamespaceMode_POD, 2*usernsHost)
	if _, err := e.d.runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: other, SandboxConfig: cfg}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("container with other mappings: %v", err)
	}

	if b, err := os.ReadFile(filepath.Join(plain, "host-file")); err != nil || string(b) != "keep" {
		t.Errorf("the unmapped volume's file: %q, %v", b, err)
	}

	// The pod shares a PID namespace: its init runs in the user namespace,
	// below a holder, and stopping the pod ends both.
	var rec struct {
		Init struct{ PID int } `json:"init"`
	}
	b, err := os.ReadFile(filepath.Join(e.d.root, "pods", podID, "pod.json"))
	if err != nil || json.Unmarshal(b, &rec) != nil || rec.Init.PID == 0 {
		t.Fatalf("pod record: %s, %v", b, err)
	}
	children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", rec.Init.PID, rec.Init.PID))
	initPID := strings.TrimSpace(string(children))
	if uidMap, err := os.ReadFile("/proc/" + initPID + "/uid_map"); err != nil || !strings.Contains(string(uidMap), "1048576") {
		t.Fatalf("the pod init %q: uid_map %q, %v", initPID, uidMap, err)
	}
	stopPod(t, e.d, podID)
	waitFor(t, func() bool {
		st, err := os.ReadFile("/proc/" + initPID + "/stat")
		return err != nil || strings.Contains(string(st), ") Z ")
	})
	removePod(t, e.d, podID)
	if after := countContainerLeaks(t, e.d); after != before {
		t.Errorf("left behind: %+v, before %+v", after, before)
	}
}

// Modes and mappings husk cannot give are refused, naming the field, and
// leave no pod.
func TestBadUserNamespaceRequests(t *testing.T) {
	d, n := newPodDaemon(t)
	_ = n
	before := countLeaks(t, d)
	two := usernsOptions(runtimeapi.NamespaceMode_POD, usernsHost)
	two.Uids = append(two.Uids, &runtimeapi.IDMapping{ContainerId: 65536, HostId: 3 * usernsHost, Length: 10})
	notZero := usernsOptions(runtimeapi.NamespaceMode_POD, usernsHost)
	notZero.Uids = []*runtimeapi.IDMapping{{ContainerId: 1, HostId: usernsHost, Length: 65536}}
	hostRoot := usernsOptions(runtimeapi.NamespaceMode_POD, 0)
	for name, tc := range map[string]struct {
		opts *runtimeapi.NamespaceOption
		code codes.Code
	}{
		"two mappings":   {&runtimeapi.NamespaceOption{UsernsOptions: two}, codes.InvalidArgument},
		"0 not mapped":   {&runtimeapi.NamespaceOption{UsernsOptions: notZero}, codes.InvalidArgument},
		"host root":      {&runtimeapi.NamespaceOption{UsernsOptions: hostRoot}, codes.InvalidArgument},
		"mode CONTAINER": {&runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}}, codes.InvalidArgument},
		"mode TARGET":    {&runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}}, codes.InvalidArgument},
		"host network":   {&runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, UsernsOptions: usernsOptions(runtimeapi.NamespaceMode_POD, usernsHost)}, codes.InvalidArgument},
	} {
		cfg := podConfig("bad-userns")
		cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: tc.opts}
		_, err := d.runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), "userns_options") {
			t.Errorf("%s: %v, want %v naming userns_options", name, err, tc.code)
		}
	}
	if after := countLeaks(t, d); after != before {
		t.Errorf("left behind: %+v, before %+v", after, before)
	}
}

// Where the kernel cannot id-map the filesystem of husk's root (here an
// overlayfs), Status does not offer user namespaces and a pod asking for
// one is refused as such, with nothing made.
func TestNoUserNamespacesWithoutIDMappedMounts(t *testing.T) {
	dir := t.TempDir()
	// Passable, as /var/lib is: what is refused here is the id-mapping.
	for d := dir; d != filepath.Clean(os.TempDir()); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"lower", "upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(dir, "root")
	opts := "lowerdir=" + filepath.Join(dir, "lower") + ",upperdir=" + filepath.Join(dir, "upper") + ",workdir=" + filepath.Join(dir, "work")
	if err := syscall.Mount("overlay", root, "overlay", 0, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(root, syscall.MNT_DETACH) })
	d := newDaemon(t, "", "--root", root)
	st, err := d.runtime.Status(context.Background(), &runtimeapi.StatusRequest{})
	if err != nil || st.RuntimeHandlers[0].GetFeatures().GetUserNamespaces() {
		t.Fatalf("Status offers user namespaces on overlayfs: %v %v", st, err)
	}
	cfg := podConfig("no-userns")
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: usernsOptions(runtimeapi.NamespaceMode_POD, usernsHost)}}
	_, err = d.runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "id-mapped") {
		t.Errorf("RunPodSandbox with a user namespace: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "pods")); len(entries) != 0 {
		t.Errorf("a refused pod left %d directories", len(entries))
	}
}

// A --state reached through a symlink (/var/run is one): removing a
// container unmounts its volumes before anything is deleted, and the
// volume's files on the host stay.
func TestRemovingAUserNamespaceContainerKeepsItsVolume(t *testing.T) {
	e := newCtrEnv(t)
	_ = e
	real := t.TempDir()
	for d := real; d != filepath.Clean(os.TempDir()); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(filepath.Dir(real), "state-link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	// After the daemon stops: its pinned namespaces' shared mount.
	t.Cleanup(func() { unmountUnder(real) })
	d := newDaemon(t, insecureConfig(e.reg.Host), "--state", link)
	newPodNet(t, d).install(t, d)
	pullImage(t, d, e.reg.Ref("busybox:plain"))
	env := &ctrEnv{d: d, reg: e.reg, logs: e.logs}

	cfg := podConfig("keep")
	cfg.LogDirectory = filepath.Join(env.logs, "keep")
	userns := usernsOptions(runtimeapi.NamespaceMode_POD, usernsHost)
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: userns}}
	podID := runPod(t, d, cfg)
	vol := t.TempDir()
	if err := os.WriteFile(filepath.Join(vol, "precious"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := ctrConfig("keep", env.image("plain"), "sleep", "300")
	c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol, UidMappings: userns.Uids, GidMappings: userns.Gids}}
	id := env.run(t, podID, cfg, c)
	if _, err := d.runtime.RemoveContainer(context.Background(), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(vol, "precious")); err != nil || string(b) != "data" {
		t.Fatalf("the volume lost its file: %q, %v", b, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(real, "containers")); len(entries) != 0 {
		t.Errorf("the container's bundle is left: %d entries", len(entries))
	}
	removePod(t, d, podID)
}

// A container of a pod with its own user namespace goes on through a
// daemon killed with SIGKILL; after the restart exec joins it (with a
// terminal of its own devpts too), a tty container of such a pod gets its
// terminal, and the pod's removal leaves nothing.
func TestUserNamespacePodSurvivesDaemonSIGKILL(t *testing.T) {
	e := newCtrEnv(t)
	before := countContainerLeaks(t, e.d)
	cfg := podConfig("userns-outage")
	cfg.LogDirectory = filepath.Join(e.logs, "userns-outage")
	userns := usernsOptions(runtimeapi.NamespaceMode_POD, usernsHost)
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: userns}}
	podID := runPod(t, e.d, cfg)
	id := e.run(t, podID, cfg, ctrConfig("sleeper", e.image("plain"), "sleep", "300"))

	_ = e.d.stop(syscall.SIGKILL)
	e.d.start()
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("after the restart: %v", st.State)
	}
	resp, err := e.d.runtime.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "id -u; head -1 /proc/self/uid_map"}, Timeout: 10})
	if err != nil || resp.ExitCode != 0 || !strings.HasPrefix(string(resp.Stdout), "0\n") || !strings.Contains(string(resp.Stdout), "1048576") {
		t.Fatalf("ExecSync after the restart: %q %q %v", resp.GetStdout(), resp.GetStderr(), err)
	}
	out, err := crictlOnTerminal(t, e, 24, 80, "exec", "-it", id, "sh", "-c", `echo "name=$(tty)"`)
	if err != nil || !strings.Contains(out, "name=/dev/pts/0") {
		t.Errorf("exec -it in the user namespace: %q, %v", out, err)
	}
	tty := ctrConfig("tty", e.image("plain"), "sh", "-c", "tty")
	tty.Tty = true
	st, lines := e.runToEnd(t, podID, cfg, tty)
	if st.ExitCode != 0 || len(lines) == 0 || !strings.HasPrefix(lines[0], "/dev/pts/0") {
		t.Errorf("tty container: exit %d, %q", st.ExitCode, lines)
	}
	stopPod(t, e.d, podID)
	removePod(t, e.d, podID)
	if after := countContainerLeaks(t, e.d); after != before {
		t.Errorf("left behind: %+v, before %+v", after, before)
	}
}

// procMount: Unmasked, which kubelet allows only with hostUsers: false and
// sends as empty masked and read-only paths: nothing of /proc is masked or
// made read-only. kubelet's defaults, in the same pod, mask as usual.
func TestUnmaskedProcInAUserNamespace(t *testing.T) {
	e := newCtrEnv(t)
	cfg := podConfig("unmasked")
	cfg.LogDirectory = filepath.Join(e.logs, "unmasked")
	userns := usernsOptions(runtimeapi.NamespaceMode_POD, usernsHost)
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: userns}}
	podID := runPod(t, e.d, cfg)
	mounts := func(name string, masked, readonly []string) string {
		c := ctrConfig(name, e.image("plain"), "sh", "-c", "cat /proc/self/mountinfo")
		c.Linux.SecurityContext.NamespaceOptions.UsernsOptions = userns
		c.Linux.SecurityContext.MaskedPaths, c.Linux.SecurityContext.ReadonlyPaths = masked, readonly
		id := e.run(t, podID, cfg, c)
		st := e.waitExited(t, id)
		return strings.Join(output(t, st.LogPath, "stdout"), "\n")
	}
	isMount := func(mountinfo, path string) bool {
		for _, l := range strings.Split(mountinfo, "\n") {
			if f := strings.Fields(l); len(f) > 4 && f[4] == path {
				return true
			}
		}
		return false
	}
	unmasked := mounts("unmasked", nil, nil)
	for _, p := range []string{"/proc/keys", "/proc/timer_list", "/proc/sys", "/proc/irq"} {
		if isMount(unmasked, p) {
			t.Errorf("procMount Unmasked: %s is masked or read-only", p)
		}
	}
	def := mounts("default", []string{"/proc/keys", "/proc/timer_list"}, []string{"/proc/sys", "/proc/irq"})
	for _, p := range []string{"/proc/keys", "/proc/timer_list", "/proc/sys", "/proc/irq"} {
		if !isMount(def, p) {
			t.Errorf("procMount Default: %s is neither masked nor read-only", p)
		}
	}
}
