package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

	"github.com/husk-runtime/husk/internal/tracing"
	"github.com/husk-runtime/husk/oci/runtime/engine"
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
func (m *Manager) StartContainer(ctx context.Context, id string) (err error) {
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
	if plugins := m.plugins(); plugins != nil {
		npod, nctr := m.nriObjects(c.ID, pod.ID)
		if err := plugins.StartContainer(ctx, npod, nctr); err != nil {
			err = fmt.Errorf("NRI plugins refused the start: %v: %w", err, errdefs.ErrFailedPrecondition)
			m.failStart(c, err.Error())
			return fmt.Errorf("starting container %s: %w", c.ID, err)
		}
		defer func() {
			if err == nil {
				plugins.PostStartContainer(ctx, npod, nctr)
			}
		}()
	}
	// While StartPending is set, an exit that refresh reads is not
	// reported: StartContainer reports the outcome of the start.
	_, span := tracing.Tracer().Start(ctx, "starting the monitor")
	err = m.startMonitor(c, pod)
	tracing.End(span, err)
	if err != nil {
		m.failStart(c, err.Error())
		m.mu.Lock()
		c.StartPending = false
		m.mu.Unlock()
		return fmt.Errorf("starting container %s: %w", c.ID, err)
	}
	if c.Restore != "" {
		// A process that reads it before this sees the old pod's name.
		if err := m.restoreHostname(pod); err != nil {
			klog.ErrorS(err, "Setting the pod's hostname again after a restore", "id", c.ID)
		}
	}
	// Under writeMu, as refresh reports an exit: the exit is reported
	// after the start, by a later refresh or, if one read it meanwhile,
	// here.
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	m.mu.Lock()
	c.StartPending = false
	exited := c.State == ContainerExited
	m.mu.Unlock()
	m.emit(EventStarted, c.ID, c.PodID)
	if exited {
		m.emit(EventStopped, c.ID, c.PodID)
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
	m.emit(EventStopped, c.ID, c.PodID)
}

func (m *Manager) startMonitor(c *Container, pod *Pod) error {
	rt, err := m.configuredRuntime(pod)
	if err != nil {
		return err
	}
	rt = m.withRestore(c, rt)
	spec, err := m.readSpec(c.ID)
	if err != nil {
		return err
	}
	ec := m.engineContainer(c)
	ec.Spec, ec.Namespaces = spec, pod.Namespaces
	if !m.opts.Cgroups.CreatedAtStart() {
		ec.CgroupProcs = m.opts.Cgroups.ProcsFiles(c.Cgroup)
	}
	args, files, err := m.monitorArgs(c, pod, rt, ec)
	if err != nil {
		return err
	}
	dir := ec.StateDir
	// With the systemd driver the daemon makes the container's cgroup, a
	// scope, once the monitor has the process to put in it.
	var sync, syncW *os.File
	if m.opts.Cgroups.CreatedAtStart() {
		if sync, syncW, err = socketPair(unix.SOCK_STREAM, "cgroup-sync"); err != nil {
			return err
		}
		defer func() { _ = sync.Close(); _ = syncW.Close() }()
		args.CgroupSync = monitor.FirstExtraFD + len(files)
		files = append(files, syncW)
	}

	for _, f := range []string{monitor.PIDFile, monitor.ExitFile, monitor.RuntimePIDFile} {
		_ = os.Remove(filepath.Join(dir, f))
	}
	m.watchExit(c.ID)
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
	cmd := m.monitorCommand(args, reportW, files, stderr)
	t0 := time.Now()
	err = m.launchMonitor(c, cmd)
	// Its copies are the monitor's now: the report's end of file is the
	// runtime's, and the sync's the monitor's; so are the runtime's files
	// (a restore's network namespace), but for the sealed binary, which
	// every monitor gets.
	_ = reportW.Close()
	if syncW != nil {
		_ = syncW.Close()
	}
	for _, f := range files {
		if f != m.opts.Binary && f != syncW {
			_ = f.Close()
		}
	}
	if err != nil {
		return err
	}
	if sync != nil {
		if err := m.placeAtStart(c, rt, spec, sync); err != nil {
			return err
		}
	}

	if err := m.waitStarted(c, rt, ec, report); err != nil {
		return err
	}
	klog.V(4).InfoS("Container started", "id", c.ID, "took", time.Since(t0))
	return nil
}

// launchMonitor starts a container's monitor and records it started.
func (m *Manager) launchMonitor(c *Container, cmd *exec.Cmd) error {
	// Recorded first: a daemon that dies from here on finds the monitor
	// by the file it writes, and the container is not started twice.
	if err := m.updateContainer(c, func(c *Container) { c.State = ContainerStarting }); err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting its monitor: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reaped by the daemon while it lives
	mon := &Process{PID: cmd.Process.Pid, BootID: bootID()}
	var err error
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
	m.watchMonitor(c)
	return nil
}

// monitorCommand is a container's monitor: not cancelled with the call
// that starts it, which it outlives.
func (m *Manager) monitorCommand(args monitor.Args, report *os.File, files []*os.File, stderr *os.File) *exec.Cmd {
	cmd := m.runtimeCommand(context.Background(), args.Argv()...)
	cmd.Stderr = stderr
	cmd.ExtraFiles = append([]*os.File{report}, files...) // from monitor.ReportFD on
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	// Its own session: the monitor must not get the daemon's signals, and
	// it outlives the daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd
}

// socketPair is a connected pair of unix sockets of a type, close-on-exec.
func socketPair(typ int, name string) (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), name), os.NewFile(uintptr(fds[1]), name), nil
}

// monitorArgs are the monitor's command line for a container, and the
// files it gets from monitor.FirstExtraFD on: what every container's
// monitor does (its log, its OOM count, its terminal and input), then its
// runtime's part.
func (m *Manager) monitorArgs(c *Container, pod *Pod, rt engine.Runtime, ec *engine.Container) (monitor.Args, []*os.File, error) {
	args := monitor.Args{State: ec.StateDir, Log: os.DevNull, TTY: c.Config.GetTty(), Stdin: c.Config.GetStdin()}
	args.StdinOnce = args.Stdin && c.Config.GetStdinOnce()
	if logDir, rel := logLocation(c); logDir != "" {
		// The monitor opens the log itself, again at each rotation: it
		// gets the directory and the path below it, not a joined path a
		// symlink could send elsewhere (logfile.go).
		args.LogDir, args.Log = logDir, rel
	}
	if oom := m.opts.Cgroups.OOMEventsFile(c.Cgroup); oom != "" {
		args.OOM = oom
		if m.opts.Cgroups.CreatedAtStart() {
			// systemd may remove the container's cgroup before the
			// monitor has read its count (the monitor's comment).
			args.OOMParent = m.opts.Cgroups.OOMEventsFile(pod.CgroupPath)
		}
	}
	files, err := rt.Launch(ec, &args)
	return args, files, err
}

// waitStarted waits until the container's command runs: the runtime's
// report channel closed without a failure, the monitor's child recorded,
// and the runtime's own sign.
func (m *Manager) waitStarted(c *Container, rt engine.Runtime, ec *engine.Container, report *os.File) error {
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
	if _, err := readContainerPID(ec.StateDir); err != nil {
		b, _ := os.ReadFile(filepath.Join(ec.StateDir, monitor.ErrFile))
		return fmt.Errorf("the monitor did not start the container: %s", b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := rt.WaitStarted(ctx, ec); err != nil {
		var early *engine.ExitedEarly
		if errors.As(err, &early) {
			return fmt.Errorf("%w: %s", err, stderrTail(c, 512))
		}
		return err
	}
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

// placeAtStart makes the container's cgroup with the process the monitor
// started in it, told by the monitor on sync, and lets the process go on
// ('1'); a refusal ('0') makes the monitor kill it. Another runtime goes
// into a cgroup of its own below (engine.Runtime's LaunchCgroup), and
// makes the container's (ProcessCgroup) itself, as with cgroupfs.
func (m *Manager) placeAtStart(c *Container, rt engine.Runtime, spec *specs.Spec, sync *os.File) (err error) {
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
	var res *specs.LinuxResources
	if spec.Linux != nil {
		res = rt.OuterLimits(spec.Linux.Resources)
	}
	if err := m.opts.Cgroups.Create(c.Cgroup, res, pid); err != nil {
		return fmt.Errorf("creating its cgroup: %w", err)
	}
	if launch := rt.LaunchCgroup(c.Cgroup); launch != c.Cgroup {
		if err := m.opts.Cgroups.Create(launch, nil, pid); err != nil {
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
