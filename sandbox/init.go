package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/husk-runtime/husk/network/ns"
)

// startInit starts the pod init in a new PID namespace inside the pod's
// other namespaces, and pins its PID namespace. The init lives in its own
// session, so that it outlives the daemon.
func (m *Manager) startInit(p *Pod, cgroupPath string) (*Process, error) {
	cmd := exec.Command(m.opts.InitBinary, "pod-init")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setsid: true}
	err := ns.Do(p.Namespaces, cmd.Start)
	if err != nil {
		return nil, fmt.Errorf("starting the pod init: %w", err)
	}
	// The daemon reaps it if it dies first; after a restart, host init does.
	go func() { _ = cmd.Wait() }()
	proc := &Process{PID: cmd.Process.Pid}
	if proc.StartTime, err = startTime(proc.PID); err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	if err := m.opts.Cgroups.AddProcess(cgroupPath, proc.PID); err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("moving the pod init into its cgroup: %w", err)
	}
	return proc, nil
}

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
	for range 500 {
		if !alive(p) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("pod init %d did not die", p.PID)
}
