package sandbox

import (
	"context"
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
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/oci/runtime/execserver"
	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// maxExecOutput bounds what ExecSync keeps of each of stdout and stderr;
// the rest is read and dropped, so the command never blocks on a full pipe
// and the daemon never holds more than this per stream. kubelet keeps 10 KiB
// of a probe's output; a command that writes without end (a hostile exec
// probe) must not grow the daemon (containerd's CVE-2022-31030).
const maxExecOutput = 1 << 20

// cappedBuffer keeps the first n bytes written to it and drops the rest. It
// has Write alone on purpose: os/exec copies a command's output with
// io.Copy, which would use a ReadFrom (bytes.Buffer's, if it were embedded)
// and never call the capping Write.
type cappedBuffer struct {
	b []byte
	n int
	// dropped counts what did not fit.
	dropped int64
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	keep := min(len(p), b.n-len(b.b))
	if keep > 0 {
		b.b = append(b.b, p[:keep]...)
	}
	b.dropped += int64(len(p) - keep)
	return len(p), nil
}

func (b *cappedBuffer) Bytes() []byte  { return b.b }
func (b *cappedBuffer) String() string { return string(b.b) }

// execTarget is what an exec joins: a running container, its first
// process and the procs files of its cgroups.
type execTarget struct {
	c       *Container
	pid     int
	cgroups []string
}

// target finds the running container an exec of cmd joins.
func (m *Manager) target(id string, cmd []string) (execTarget, error) {
	if len(cmd) == 0 {
		return execTarget{}, fmt.Errorf("cmd is empty: %w", errdefs.ErrInvalidArgument)
	}
	c, err := m.GetContainer(id)
	if err != nil {
		return execTarget{}, err
	}
	p := m.containerInit(c)
	if p == nil {
		return execTarget{}, fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	return execTarget{c: c, pid: p.PID, cgroups: m.opts.Cgroups.ProcsFiles(m.processCgroup(c))}, nil
}

// execCommand prepares `husk-runtime exec-enter` for cmd in t:
// in its namespaces and cgroup, as its user, with its capabilities and
// seccomp filter. Cancelling ctx kills the command and all it started. The
// returned func releases what the command holds open of the daemon's.
func (m *Manager) execCommand(ctx context.Context, t execTarget, cmd []string, tty bool) (*exec.Cmd, func(), error) {
	c := t.c
	spec, err := os.Open(filepath.Join(m.bundleDir(c.ID), "config.json"))
	if err != nil {
		return nil, nil, err
	}
	args := []string{"exec-enter", "--pid", strconv.Itoa(t.pid), "--exec-fd", "3"}
	for _, f := range t.cgroups {
		args = append(args, "--cgroup", f)
	}
	files := []*os.File{m.opts.Binary, spec} // fds 3 and 4
	if tty {
		args = append(args, "--tty")
	} else if profile, err := os.Open(m.execProfilePath(c.ID)); err == nil {
		// exec-enter's child becomes the container's process itself; a
		// container made before profiles has none, and gets exec-init.
		files = append(files, profile)
		args = append(args, "--profile-fd", "5")
	}
	args = append(args, "--", "husk-runtime", "exec-init", "--")
	args = append(args, cmd...)
	x := m.runtimeCommand(ctx, args...)
	x.ExtraFiles = files
	x.Env = []string{monitor.EnvExecSpecFD + "=4"}
	x.Dir = "/"
	x.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// On cancel exec-enter gets SIGTERM and kills all the command started;
	// SIGKILL follows if it does not end.
	x.Cancel = func() error { return x.Process.Signal(syscall.SIGTERM) }
	// What the command started may hold its output open after it ended.
	x.WaitDelay = time.Second
	return x, func() {
		for _, f := range files[1:] {
			_ = f.Close()
		}
	}, nil
}

// ExecSync runs cmd in a running container, as ExecSync (kubelet's exec
// probes). A timeout (0: none) kills the command.
func (m *Manager) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (stdout, stderr []byte, code int32, err error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	t, err := m.target(id, cmd)
	if err != nil {
		return nil, nil, 0, err
	}
	out, errOut := cappedBuffer{n: maxExecOutput}, cappedBuffer{n: maxExecOutput}
	exit, err := m.execThroughServer(ctx, t, cmd, &out, &errOut)
	if errors.Is(err, execserver.ErrUnavailable) {
		exit, err = m.execThroughEnter(ctx, t, cmd, &out, &errOut)
	}
	if out.dropped > 0 || errOut.dropped > 0 {
		klog.V(2).InfoS("ExecSync output truncated", "id", id, "stdoutDropped", out.dropped, "stderrDropped", errOut.dropped, "limit", maxExecOutput)
	}
	if ctx.Err() != nil {
		return out.Bytes(), errOut.Bytes(), 0, fmt.Errorf("exec in container %s: %w", id, ctx.Err())
	}
	if err != nil {
		return nil, nil, 0, err
	}
	return out.Bytes(), errOut.Bytes(), int32(exit), nil
}

// execThroughEnter runs cmd in t by `husk-runtime exec-enter`, and
// returns the command's exit code.
func (m *Manager) execThroughEnter(ctx context.Context, t execTarget, cmd []string, stdout, stderr io.Writer) (int, error) {
	x, release, err := m.execCommand(ctx, t, cmd, false)
	if err != nil {
		return 0, err
	}
	defer release()
	x.Stdout, x.Stderr = stdout, stderr
	err = x.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		return 0, fmt.Errorf("exec in container %s: %w", t.c.ID, err)
	}
	return 0, nil
}

// execThroughServer runs cmd in t by the exec server (package
// execserver), which needs the container's exec profile. An
// error wrapping execserver.ErrUnavailable means nothing ran: the caller
// starts exec-enter instead.
func (m *Manager) execThroughServer(ctx context.Context, t execTarget, cmd []string, stdout, stderr io.Writer) (int, error) {
	profile, err := os.Open(m.execProfilePath(t.c.ID))
	if err != nil {
		return 0, fmt.Errorf("%w: %w", execserver.ErrUnavailable, err)
	}
	defer func() { _ = profile.Close() }()
	code, err := m.execs.Run(ctx, execserver.Exec{
		PID: t.pid, Cgroups: t.cgroups, Args: cmd,
		Profile: profile, Stdout: stdout, Stderr: stderr,
	})
	if err != nil && !errors.Is(err, execserver.ErrUnavailable) {
		return 0, fmt.Errorf("exec in container %s: %w", t.c.ID, err)
	}
	return code, err
}

// execServerCommand is `husk-runtime exec-server`, in a session of its
// own like the monitors.
func (m *Manager) execServerCommand() *exec.Cmd {
	x := m.runtimeCommand(context.Background(), "exec-server")
	x.Env = []string{}
	x.Dir = "/"
	x.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return x
}

// TerminalSize is a terminal's size in characters.
type TerminalSize struct{ Width, Height uint16 }

// Exec runs cmd in a running container with its standard streams
// connected to the caller's (kubectl exec, crictl exec). With tty, the
// command gets a terminal of its own, resized as resize says, and its
// output comes on out alone. The error is an exec.ExitError for a command
// that ran and failed.
func (m *Manager) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.Writer, tty bool, resize <-chan TerminalSize) error {
	t, err := m.target(id, cmd)
	if err != nil {
		return err
	}
	x, release, err := m.execCommand(ctx, t, cmd, tty)
	if err != nil {
		return err
	}
	defer release()
	if !tty {
		x.Stdin, x.Stdout, x.Stderr = in, out, errw
		err := x.Run()
		if errors.Is(err, exec.ErrWaitDelay) {
			return nil
		}
		return err
	}
	return m.execWithTerminal(ctx, x, in, out, resize)
}

// execWithTerminal runs an exec's command on a terminal made in the
// container (oci/runtime/linux/console.go), whose master comes back on a
// socket; the command waits for the socket's close, so that it starts with
// the client's size.
func (m *Manager) execWithTerminal(ctx context.Context, x *exec.Cmd, in io.Reader, out io.Writer, resize <-chan TerminalSize) error {
	ours, theirs, err := socketPair(unix.SOCK_SEQPACKET, "console")
	if err != nil {
		return err
	}
	defer func() { _ = ours.Close() }()
	x.ExtraFiles = append(x.ExtraFiles, theirs)
	x.Env = append(x.Env, fmt.Sprintf("%s=%d", monitor.EnvConsoleFD, 2+len(x.ExtraFiles)), monitor.EnvConsoleSync+"=1")
	// Until the terminal is there, errors come on stderr.
	setupErr := cappedBuffer{n: 4096}
	x.Stderr = &setupErr
	err = x.Start()
	_ = theirs.Close()
	if err != nil {
		return err
	}
	master, err := receiveFile(ours, "terminal")
	if err != nil {
		werr := x.Wait()
		if msg := strings.TrimSpace(setupErr.String()); msg != "" {
			return fmt.Errorf("making the exec's terminal: %s (%v)", msg, werr)
		}
		return fmt.Errorf("making the exec's terminal: %w (%v)", err, werr)
	}
	defer func() { _ = master.Close() }()
	if resize != nil {
		if err := followSize(ctx, master, resize); err != nil {
			return err
		}
	}
	// The command may start.
	_ = ours.Close()
	if in != nil {
		go func() { _, _ = io.Copy(master, in) }()
	}
	// The terminal's output ends (EIO) once the command and all that holds
	// the terminal are gone.
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, master)
		close(copied)
	}()
	err = x.Wait()
	select {
	case <-copied:
	case <-time.After(time.Second):
	}
	return err
}

// followSize gives the terminal the client's sizes: the first before the
// command starts (the client sends it as soon as the session is up), or
// none after a second; the others as they come.
func followSize(ctx context.Context, master *os.File, resize <-chan TerminalSize) error {
	// Through SyscallConn: Fd would put the master in blocking mode, and
	// Close could no longer end the copy of its output.
	raw, err := master.SyscallConn()
	if err != nil {
		return err
	}
	setSize := func(s TerminalSize) {
		_ = raw.Control(func(fd uintptr) {
			_ = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: s.Width, Row: s.Height})
		})
	}
	select {
	case s, ok := <-resize:
		if ok {
			setSize(s)
		}
	case <-time.After(time.Second):
	case <-ctx.Done():
	}
	go func() {
		for s := range resize {
			setSize(s)
		}
	}()
	return nil
}

// receiveFile reads one descriptor sent on sock (SCM_RIGHTS). EOF, when
// every sender is gone without sending, is an error.
func receiveFile(sock *os.File, name string) (*os.File, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, err
	}
	for _, msg := range msgs {
		fds, err := unix.ParseUnixRights(&msg)
		if err != nil {
			continue
		}
		for _, fd := range fds[1:] {
			_ = unix.Close(fd)
		}
		if len(fds) > 0 {
			// Non-blocking, so that Go's poller serves it and Close
			// ends a read in progress.
			if err := unix.SetNonblock(fds[0], true); err != nil {
				_ = unix.Close(fds[0])
				return nil, err
			}
			return os.NewFile(uintptr(fds[0]), name), nil
		}
	}
	return nil, errors.New("nothing was sent")
}
