package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/internal/procfs"
	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// startInit starts the pod init: PID 1 of a new PID namespace, inside the
// pod's other namespaces, in a cgroup of its own below the pod's (on
// cgroup v2 the pod's cgroup cannot hold processes and children at once),
// and pins its PID namespace.
//
// The init waits on a pipe before it does anything: the daemon lets it go
// only once the init is recorded and in its cgroup. A daemon that dies
// before that closes the pipe, and the init exits: no init runs that no
// record knows of.
func (m *Manager) startInit(p *Pod) (err error) {
	initCgroup, err := m.opts.Cgroups.SandboxInitPath(p.CgroupPath, p.ID)
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer func() { _ = w.Close() }()
	cmd := m.runtimeCommand(context.Background(), "pod-init", m.emptyDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setsid: true}
	cmd.ExtraFiles = []*os.File{r} // fd 3
	cmd.Env = []string{}
	cmd.Dir = "/"
	// In a pod with its own user namespace the PID namespace must be that
	// one's: the pod init makes it itself, and says when (podinit.c).
	userns := p.Namespaces[ns.User]
	var said io.ReadCloser
	if userns != "" {
		cmd.SysProcAttr.Cloneflags = 0
		cmd.Env = []string{monitor.EnvPodUserns + "=" + userns}
		if said, err = cmd.StdoutPipe(); err != nil {
			return err
		}
	}
	err = ns.Do(p.Namespaces, cmd.Start)
	_ = r.Close()
	if err != nil {
		return err
	}
	// The daemon reaps it if it dies first; after a restart, host init
	// does. Waiting starts once what it says has been read: Wait closes
	// the pipe.
	defer func() {
		go func() {
			err := cmd.Wait()
			klog.V(2).InfoS("Pod init ended", "pod", p.ID, "err", err)
		}()
	}()
	proc := &Process{PID: cmd.Process.Pid, BootID: bootID()}
	pidNS := m.nsPath(p.ID, ns.PID)
	defer func() {
		if err != nil {
			_ = cmd.Process.Kill()
		}
	}()
	if proc.StartTime, err = startTime(proc.PID); err != nil {
		return err
	}
	if err := m.update(p, func(p *Pod) { p.Init = proc; p.Namespaces[ns.PID] = pidNS }); err != nil {
		return err
	}
	// Made with the init in it: a systemd scope cannot be empty.
	if err := m.opts.Cgroups.Create(initCgroup, nil, proc.PID); err != nil {
		return fmt.Errorf("creating its cgroup: %w", err)
	}
	if userns == "" {
		if err := ns.PinProcess(proc.PID, ns.PID, pidNS); err != nil {
			return fmt.Errorf("pinning its PID namespace: %w", err)
		}
	}
	if _, err := w.Write([]byte{1}); err != nil {
		return fmt.Errorf("letting it run: %w", err)
	}
	if userns != "" {
		// A PID namespace can be pinned only once its init is in it.
		if err := expect(said, 'f'); err != nil {
			return fmt.Errorf("starting it in the PID namespace: %w", err)
		}
		if err := ns.PinProcessChildren(proc.PID, pidNS); err != nil {
			return fmt.Errorf("pinning its PID namespace: %w", err)
		}
	}
	return nil
}

// expect reads the byte want from what the pod init says, giving it 10 s.
func expect(r io.Reader, want byte) error {
	got := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := io.ReadFull(r, b[:])
		if err == nil && b[0] != want {
			err = fmt.Errorf("it said %q, not %q", b[0], want)
		}
		got <- err
	}()
	select {
	case err := <-got:
		return err
	case <-time.After(10 * time.Second):
		return errors.New("it did not answer in 10 s")
	}
}

func bootID() string { return procfs.BootID() }

// startTime reads a process's start time (clock ticks since boot), which
// together with the pid names one process for the life of the machine.
func startTime(pid int) (uint64, error) {
	st, _, err := procStat(pid)
	return st, err
}

// procStat returns a process's start time and state letter.
func procStat(pid int) (uint64, string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", err
	}
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after its last ")" are plain.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return 0, "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	st, err := strconv.ParseUint(fields[19], 10, 64)
	return st, fields[0], err
}

// alive: the recorded process still runs. A zombie is dead: whether its
// parent reaps it is not ours to wait for.
func alive(p *Process) bool {
	if p.BootID != bootID() {
		return false
	}
	st, state, err := procStat(p.PID)
	return err == nil && st == p.StartTime && state != "Z"
}

// kill ends the process if it is still the one recorded, and waits until
// it is gone (reaped by the daemon or host init), so that its namespace and
// cgroup can go.
func kill(p *Process) error {
	if !alive(p) {
		return nil
	}
	if err := unix.Kill(p.PID, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("killing pod init %d: %w", p.PID, err)
	}
	if !waitUntil(5*time.Second, func() bool { return !alive(p) }) {
		return fmt.Errorf("pod init %d did not die", p.PID)
	}
	return nil
}
