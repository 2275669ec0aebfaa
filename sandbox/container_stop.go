package sandbox

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// refresh brings a started container's record up to date with its
// monitor: the exit it recorded, or, if the monitor died without one (it
// was killed, the machine rebooted) and the container's process is gone
// too, an unknown end. A container whose monitor died but whose process
// still runs stays running (unlogged): stop and remove kill it.
func (m *Manager) refresh(c *Container) {
	m.mu.Lock()
	state, mon := c.State, c.Monitor
	m.mu.Unlock()
	if state != ContainerStarted {
		return
	}
	e, err := readExit(m.containerDir(c.ID))
	if err != nil {
		if mon != nil && alive(mon) {
			return
		}
		// The monitor may have written the file just after the check.
		if e, err = readExit(m.containerDir(c.ID)); err != nil {
			if p, perr := readContainerPID(m.containerDir(c.ID)); perr == nil && alive(p) {
				return
			}
			e = &Exit{Code: 255, FinishedAt: time.Now().UnixNano(), Reason: "Unknown", Message: "the container's monitor ended without recording an exit"}
		}
	}
	// Whoever reads the exit first (the exit watch, a status, a stop)
	// reports it, once; while StartContainer has not returned, it does,
	// after the start.
	ended := false
	if err := m.updateContainerThen(c, func(c *Container) {
		if c.State == ContainerStarted {
			c.State, c.Exit = ContainerExited, e
			ended = !c.StartPending
		}
	}, func() {
		if ended {
			m.emit(EventStopped, c.ID, c.PodID)
		}
	}); err != nil {
		klog.ErrorS(err, "Recording a container's exit", "id", c.ID)
	}
}

// running is the container's first process, if it runs.
func (m *Manager) running(c *Container) *Process {
	m.mu.Lock()
	state := c.State
	m.mu.Unlock()
	if state != ContainerStarted {
		return nil
	}
	p, err := readContainerPID(m.containerDir(c.ID))
	if err != nil || !alive(p) {
		return nil
	}
	return p
}

// StopContainer stops a container, as StopContainer: the image's stop
// signal (or SIGTERM), then after timeout seconds SIGKILL to every process
// of the container. Stopping a container that does not run succeeds.
func (m *Manager) StopContainer(ctx context.Context, id string, timeout int64) error {
	c, unlock, err := m.lockContainer(id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock()
	if err := m.stopContainer(c, time.Duration(timeout)*time.Second); err != nil {
		return err
	}
	if plugins := m.plugins(); plugins != nil {
		pod, ctr := m.nriObjects(c.ID, c.PodID)
		plugins.StopContainer(ctx, pod, ctr)
	}
	return nil
}

func (m *Manager) stopContainer(c *Container, timeout time.Duration) error {
	m.refresh(c)
	p := m.running(c)
	if p == nil {
		// Its first process has ended, but what it started may live on
		// (and hold the monitor, which waits for the output to close):
		// nothing of a stopped container may run.
		if err := m.killCgroup(c.Cgroup); err != nil {
			return err
		}
		m.waitExit(c, 5*time.Second)
		return nil
	}
	if timeout > 0 {
		sig := syscall.Signal(c.StopSig)
		if sig == 0 {
			sig = syscall.SIGTERM
		}
		// The container's own first process: for another runtime the
		// monitor's child is the runtime.
		target := p
		if ip := m.containerInit(c); ip != nil {
			target = ip
		}
		if err := unix.Kill(target.PID, sig); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("signalling container %s: %w", c.ID, err)
		}
		if m.waitExit(c, timeout) {
			return nil
		}
	}
	// SIGKILL to the whole cgroup: a process that ignored the signal, and
	// everything it started. (A PID namespace's init ignores SIGTERM it has
	// no handler for, so the fallback is needed even for well-behaved
	// containers.)
	if err := m.killCgroup(c.Cgroup); err != nil {
		return err
	}
	_ = unix.Kill(p.PID, unix.SIGKILL)
	if !m.waitExit(c, 10*time.Second) {
		return fmt.Errorf("container %s did not stop", c.ID)
	}
	return nil
}

// waitExit waits until the container's exit is recorded.
func (m *Manager) waitExit(c *Container, d time.Duration) bool {
	return waitUntil(d, func() bool {
		m.refresh(c)
		m.mu.Lock()
		defer m.mu.Unlock()
		return c.State != ContainerStarted
	})
}

// waitUntil checks cond until it holds or d has passed, and says whether
// it held. The first checks come a millisecond apart: a killed process is
// usually gone, and its monitor has recorded its exit, within two or three;
// a flat 10 ms wait was most of what stopping a pod's container took.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	pause := time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}
