package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/runtime/linux"
	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// startTimeout bounds how long a container's runtime may take to set it up.
const startTimeout = time.Minute

// StartContainer starts a created container, as StartContainer: its
// monitor (which outlives the daemon) starts the runtime, which sets the
// container up and executes its command. It returns once the command was
// executed, or with the runtime's error; a container that fails to start
// is Exited with reason StartError.
func (m *Manager) StartContainer(ctx context.Context, id string) error {
	c, unlock, err := m.lockContainer(id)
	if err != nil {
		return err
	}
	defer unlock()
	if c.State != ContainerCreated {
		return fmt.Errorf("container %s is %s, not created: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	pod, err := m.lookup(c.PodID)
	if err != nil {
		return err
	}
	if !pod.Ready() {
		return fmt.Errorf("pod sandbox %s of container %s is not ready: %w", pod.ID, c.ID, errdefs.ErrFailedPrecondition)
	}
	err = m.startMonitor(c, pod)
	m.mu.Lock()
	c.StartPending = false
	m.mu.Unlock()
	if err != nil {
		m.failStart(c, err.Error())
		return fmt.Errorf("starting container %s: %w", c.ID, err)
	}
	return nil
}

// failStart ends a start that did not get the container running: whatever
// runs of it (the monitor, a runtime stuck in its setup, the command if it
// got that far) is killed, and the container is Exited with StartError.
func (m *Manager) failStart(c *Container, msg string) {
	if mon, err := readMonitorProcess(m.containerDir(c.ID)); err == nil && alive(mon) {
		_ = syscall.Kill(mon.PID, syscall.SIGKILL)
	}
	if p, err := readContainerPID(m.containerDir(c.ID)); err == nil && alive(p) {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
	}
	if err := m.killCgroup(c.Cgroup); err != nil {
		klog.ErrorS(err, "Killing what a failed start left", "id", c.ID)
	}
	_ = m.updateContainer(c, func(c *Container) {
		c.State = ContainerExited
		c.Exit = &Exit{Code: 128, FinishedAt: time.Now().UnixNano(), Reason: "StartError", Message: msg}
	})
}

func (m *Manager) startMonitor(c *Container, pod *Pod) error {
	dir := m.containerDir(c.ID)
	args := []string{"monitor", "--state", dir, "--log", os.DevNull}
	if logDir, rel := logLocation(c); logDir != "" {
		// The monitor opens the log itself, again at each rotation: it
		// gets the directory and the path below it, not a joined path a
		// symlink could send elsewhere (logfile.go).
		args = []string{"monitor", "--state", dir, "--log-dir", logDir, "--log", rel}
	}
	if oom := m.opts.Cgroups.OOMEventsFile(c.Cgroup); oom != "" {
		args = append(args, "--oom", oom)
		if m.opts.Cgroups.CreatedAtStart() {
			// systemd may remove the container's cgroup before the
			// monitor has read its count (the monitor's comment).
			args = append(args, "--oom-parent", m.opts.Cgroups.OOMEventsFile(pod.CgroupPath))
		}
	}
	handler := pod.RuntimeHandler
	if handler != "" && m.runtimePath(handler) == "" {
		return fmt.Errorf("the pod's runtime handler %q is no longer configured: %w", handler, errdefs.ErrFailedPrecondition)
	}
	if handler != "" {
		// Should the runtime die before the container, the monitor waits
		// for the container's process, named in this file, instead.
		args = append(args, "--runtime-pid-file", m.runtimePIDFile(c.ID))
	}
	if handler != "" && !m.opts.Cgroups.Unified() {
		// cgroup v1 counts an OOM kill in the runtime's cgroup, which the
		// runtime removes: the monitor listens for the OOM instead.
		args = append(args, "--oom-notify")
	}
	if handler == "" {
		more, err := m.builtinMonitorArgs(c, pod)
		if err != nil {
			return err
		}
		args = append(args, more...)
	}
	// With the systemd driver the daemon makes the container's cgroup, a
	// scope, once the monitor has the process to put in it.
	var sync, syncW *os.File
	if m.opts.Cgroups.CreatedAtStart() {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socketpair: %w", err)
		}
		sync, syncW = os.NewFile(uintptr(fds[0]), "cgroup-sync"), os.NewFile(uintptr(fds[1]), "cgroup-sync")
		defer func() { _ = sync.Close(); _ = syncW.Close() }()
		fd := 4 // after the report channel, and the sealed binary if any
		if handler == "" {
			fd = 5
		}
		args = append(args, "--cgroup-sync", strconv.Itoa(fd))
	}
	if c.Config.GetTty() {
		args = append(args, "--tty")
	}
	if c.Config.GetStdin() {
		args = append(args, "--stdin")
		if c.Config.GetStdinOnce() {
			args = append(args, "--stdin-once")
		}
	}
	args = append(args, "--")
	if handler == "" {
		args = append(args, "husk-runtime", "container-init", m.bundleDir(c.ID))
	} else {
		// The runtime puts the container in its cgroup and namespaces
		// itself, from the spec.
		args = append(args, m.runtimeArgs(handler, c.ID)...)
	}

	for _, f := range []string{monitor.PIDFile, monitor.ExitFile, monitor.RuntimePIDFile} {
		_ = os.Remove(filepath.Join(dir, f))
	}
	report, reportW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer func() { _ = report.Close() }()
	stderr, err := os.OpenFile(filepath.Join(dir, monitor.ErrFile), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		_ = reportW.Close()
		return err
	}
	defer func() { _ = stderr.Close() }()
	// Not cancelled with the call: the monitor outlives it.
	cmd := m.runtimeCommand(context.Background(), args...)
	cmd.Stderr = stderr
	cmd.ExtraFiles = []*os.File{reportW} // fd 3
	if handler == "" {
		cmd.ExtraFiles = append(cmd.ExtraFiles, m.opts.Binary) // fd 4
	}
	if syncW != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, syncW) // fd 5, or 4
	}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	// Its own session: the monitor must not get the daemon's signals, and
	// it outlives the daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	t0 := time.Now()
	// Recorded first: a daemon that dies from here on finds the monitor
	// by the file it writes, and the container is not started twice.
	if err := m.updateContainer(c, func(c *Container) { c.State = ContainerStarting }); err != nil {
		_ = reportW.Close()
		return err
	}
	err = cmd.Start()
	_ = reportW.Close()
	if syncW != nil {
		_ = syncW.Close()
	}
	if err != nil {
		return fmt.Errorf("starting its monitor: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reaped by the daemon while it lives
	mon := &Process{PID: cmd.Process.Pid, BootID: bootID()}
	if mon.StartTime, err = startTime(mon.PID); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	if err := m.updateContainer(c, func(c *Container) {
		c.Monitor = mon
		c.State = ContainerStarted
		c.StartedAt = time.Now().UnixNano()
		c.StartPending = true
	}); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	if sync != nil {
		if err := m.placeAtStart(c, handler, sync); err != nil {
			return err
		}
	}

	// The runtime reports a failure on the pipe; the exec of the command
	// closes it. The monitor closes its own end after starting the runtime.
	msg := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(report, 64<<10))
		msg <- b
	}()
	select {
	case b := <-msg:
		if len(b) > 0 {
			m.waitExit(c, 5*time.Second)
			if bytes.HasPrefix(b, []byte(linux.ReportBadCommand)) {
				return fmt.Errorf("%s: %w", b, errdefs.ErrInvalidArgument)
			}
			return fmt.Errorf("%s", b)
		}
	case <-time.After(startTimeout):
		return fmt.Errorf("the runtime did not start the container within %v", startTimeout)
	}
	if _, err := readContainerPID(dir); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, monitor.ErrFile))
		return fmt.Errorf("the monitor did not start the container: %s", b)
	}
	if handler != "" {
		if err := m.waitRuntimeStarted(c, handler); err != nil {
			return err
		}
	}
	klog.V(4).InfoS("Container started", "id", c.ID, "took", time.Since(t0))
	return nil
}

func (m *Manager) binaryPath() string {
	return "/proc/self/fd/" + strconv.Itoa(int(m.opts.Binary.Fd()))
}

// runtimeCommand runs husk-runtime from its sealed copy, named
// husk-runtime in ps rather than /proc/self/fd/N.
func (m *Manager) runtimeCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, m.binaryPath(), args...)
	cmd.Args[0] = "husk-runtime"
	return cmd
}

// builtinMonitorArgs are the monitor's flags for husk's own runtime: the
// sealed husk-runtime to run (descriptor 4), the cgroup to put it in, the
// pod's namespaces to start it in.
func (m *Manager) builtinMonitorArgs(c *Container, pod *Pod) ([]string, error) {
	args := []string{"--exec-fd", "4"}
	if !m.opts.Cgroups.CreatedAtStart() {
		for _, f := range m.opts.Cgroups.ProcsFiles(c.Cgroup) {
			args = append(args, "--cgroup", f)
		}
	}
	for t, flag := range map[ns.Type]string{ns.User: "--userns", ns.Net: "--netns", ns.IPC: "--ipcns", ns.UTS: "--utsns"} {
		if p, ok := pod.Namespaces[t]; ok {
			args = append(args, flag, p)
		}
	}
	spec, err := m.readSpec(c.ID)
	if err != nil {
		return nil, err
	}
	// The runtime of a container in a pod's user namespace cannot write
	// its own oom_score_adj (its /proc files are the host's root's: its
	// binary is one it cannot read): the monitor, the host's, does.
	if spec.Process != nil && spec.Process.OOMScoreAdj != nil {
		args = append(args, "--oom-score-adj", strconv.Itoa(*spec.Process.OOMScoreAdj))
	}
	// The PID namespace is the one the spec says: the pod's, a new one,
	// or (no entry) the host's.
	pidNS := pidNamespace(spec)
	switch {
	case pidNS == nil:
	case pidNS.Path != "":
		args = append(args, "--pidns", pidNS.Path)
	default:
		args = append(args, "--newpid")
	}
	return args, nil
}

// placeAtStart makes the container's cgroup with the process the monitor
// started in it, told by the monitor on sync, and lets the process go on
// ('1'); a refusal ('0') makes the monitor kill it. Another runtime goes
// into a cgroup of its own below, as with cgroupfs (CreateContainer).
func (m *Manager) placeAtStart(c *Container, handler string, sync *os.File) (err error) {
	reply := []byte{monitor.PlacedRefused}
	defer func() {
		if err == nil {
			reply[0] = monitor.PlacedGo
		}
		if _, werr := sync.Write(reply); werr != nil && err == nil {
			err = fmt.Errorf("letting the container go on: %w", werr)
		}
	}()
	_ = sync.SetReadDeadline(time.Now().Add(startTimeout))
	line, err := bufio.NewReader(io.LimitReader(sync, 32)).ReadString('\n')
	if err != nil {
		return fmt.Errorf("the monitor did not say which process to put in the cgroup: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return fmt.Errorf("the monitor named process %q", line)
	}
	spec, err := m.readSpec(c.ID)
	if err != nil {
		return err
	}
	var res *specs.LinuxResources
	if spec.Linux != nil {
		res = spec.Linux.Resources
	}
	if handler != "" {
		res = handlerCgroupResources(res)
	}
	if err := m.opts.Cgroups.Create(c.Cgroup, res, pid); err != nil {
		return fmt.Errorf("creating its cgroup: %w", err)
	}
	if inner := m.processCgroup(c); inner != c.Cgroup {
		if err := m.opts.Cgroups.Create(inner, nil, pid); err != nil {
			return fmt.Errorf("creating the runtime's cgroup: %w", err)
		}
	}
	return nil
}

// readSpec reads a container's OCI spec from its bundle.
func (m *Manager) readSpec(id string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(m.bundleDir(id), "config.json"))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// pidNamespace is the PID namespace of a spec: nil for the host's, one
// without a path for a new one.
func pidNamespace(s *specs.Spec) *specs.LinuxNamespace {
	if s.Linux == nil {
		return nil
	}
	for _, n := range s.Linux.Namespaces {
		if n.Type == specs.PIDNamespace {
			return &n
		}
	}
	return nil
}
