package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
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
			if p, perr := readMonitorPID(m.containerDir(c.ID)); perr == nil && alive(p) {
				return
			}
			e = &Exit{Code: 255, FinishedAt: time.Now().UnixNano(), Reason: "Unknown", Message: "the container's monitor ended without recording an exit"}
		}
	}
	if err := m.updateContainer(c, func(c *Container) {
		if c.State == ContainerStarted {
			c.State, c.Exit = ContainerExited, e
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
	p, err := readMonitorPID(m.containerDir(c.ID))
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
	return m.stopContainer(c, time.Duration(timeout)*time.Second)
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
	deadline := time.Now().Add(d)
	for {
		m.refresh(c)
		m.mu.Lock()
		done := c.State != ContainerStarted
		m.mu.Unlock()
		if done {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// RemoveContainer removes a container, as RemoveContainer, stopping it
// first if it runs: its root filesystem (the mount and the upper dir),
// cgroup and state go; its log stays for kubelet. An unknown container
// succeeds.
func (m *Manager) RemoveContainer(ctx context.Context, id string) error {
	c, unlock, err := m.lockContainer(id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock()
	if err := m.stopContainer(c, 0); err != nil {
		return err
	}
	if err := m.destroyContainer(c); err != nil {
		return fmt.Errorf("removing container %s: %w", c.ID, err)
	}
	m.forgetContainer(c)
	return nil
}

// destroyContainer removes what a container has on the machine. Each step
// can be repeated.
func (m *Manager) destroyContainer(c *Container) error {
	if c.Monitor != nil && alive(c.Monitor) {
		// A monitor whose container ended lingers only to drain output.
		_ = unix.Kill(c.Monitor.PID, unix.SIGKILL)
	}
	if c.Rootfs != "" {
		if err := unix.Unmount(c.Rootfs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmounting its root filesystem: %w", err)
		}
	}
	for _, v := range c.ImageVolumes {
		if err := unix.Unmount(v.Path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmounting its image volume %s: %w", v.Path, err)
		}
	}
	if err := m.killCgroup(c.Cgroup); err != nil {
		return err
	}
	if err := m.opts.Cgroups.Delete(c.Cgroup); err != nil {
		return fmt.Errorf("removing its cgroup: %w", err)
	}
	m.forgetSamples(c.Cgroup)
	// Another runtime may still know the container (a crash came before
	// its `run` ended and deleted it).
	m.deleteRuntimeStates(c.ID)
	// What else the bundle holds mounted: the volumes of a container in
	// a pod with its own user namespace.
	if err := unmountBundle(m.bundleDir(c.ID)); err != nil {
		return err
	}
	if err := removeTree(m.bundleDir(c.ID)); err != nil {
		return err
	}
	// No record is written once the files go (a refresh racing the removal
	// would bring the directory back).
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	m.mu.Lock()
	c.gone = true
	m.mu.Unlock()
	return os.RemoveAll(m.containerDir(c.ID))
}

// ReopenContainerLog makes the monitor of a running container reopen its
// log file, after kubelet moved it away to rotate it.
func (m *Manager) ReopenContainerLog(ctx context.Context, id string) error {
	c, unlock, err := m.lockContainer(id)
	if err != nil {
		return err
	}
	defer unlock()
	m.refresh(c)
	m.mu.Lock()
	mon := c.Monitor
	m.mu.Unlock()
	if m.running(c) == nil || mon == nil || !alive(mon) {
		return fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	if c.LogPath == "" {
		return nil
	}
	if err := unix.Kill(mon.PID, unix.SIGUSR1); err != nil {
		return fmt.Errorf("signalling the monitor: %w", err)
	}
	for range 200 {
		if f, err := openLog(c); err == nil {
			_ = f.Close()
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("the monitor of container %s did not reopen %s (it opens no symlink and nothing outside the log directory): %w", c.ID, c.LogPath, errdefs.ErrFailedPrecondition)
}

// findContainerLocked finds a container by id or unique id prefix.
func (m *Manager) findContainerLocked(id string) (*Container, error) {
	if id == "" {
		return nil, fmt.Errorf("container id is empty: %w", errdefs.ErrInvalidArgument)
	}
	if c, ok := m.containers[id]; ok {
		return c, nil
	}
	var found *Container
	for cid, c := range m.containers {
		if strings.HasPrefix(cid, id) {
			if found != nil {
				return nil, fmt.Errorf("container id prefix %q is ambiguous: %w", id, errdefs.ErrInvalidArgument)
			}
			found = c
		}
	}
	if found == nil {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return found, nil
}

// GetContainer returns a copy of a container, up to date with its monitor.
func (m *Manager) GetContainer(id string) (*Container, error) {
	m.mu.Lock()
	c, err := m.findContainerLocked(id)
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	m.refresh(c)
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.State == ContainerCreating {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return copyContainer(c), nil
}

// ListContainers returns copies of every container, oldest first.
func (m *Manager) ListContainers() []*Container {
	m.mu.Lock()
	all := make([]*Container, 0, len(m.containers))
	for _, c := range m.containers {
		all = append(all, c)
	}
	m.mu.Unlock()
	out := make([]*Container, 0, len(all))
	for _, c := range all {
		m.refresh(c)
		m.mu.Lock()
		if c.State != ContainerCreating {
			out = append(out, copyContainer(c))
		}
		m.mu.Unlock()
	}
	sortContainers(out)
	return out
}

// containersOf lists the containers of a pod.
func (m *Manager) containersOf(podID string) []*Container {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Container
	for _, c := range m.containers {
		if c.PodID == podID {
			out = append(out, c)
		}
	}
	return out
}

// ContainerPID is the host pid of a running container's first process.
func (m *Manager) ContainerPID(id string) (int, error) {
	c, err := m.GetContainer(id)
	if err != nil {
		return 0, err
	}
	p := m.containerInit(c)
	if p == nil {
		return 0, fmt.Errorf("container %s is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	return p.PID, nil
}

// BundleDir holds a container's OCI bundle (config.json, rootfs).
func (m *Manager) BundleDir(id string) string { return m.bundleDir(id) }
