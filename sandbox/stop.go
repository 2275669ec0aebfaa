package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/husk-runtime/husk/network/ns"
)

// Stop stops a pod, as StopPodSandbox: its processes are killed, its
// network torn down (CNI DEL, once) and its namespaces released; it stays
// listed as NotReady until removed. Stopping a stopped or unknown pod
// succeeds: kubelet retries stops until they succeed.
func (m *Manager) Stop(ctx context.Context, id string) error {
	p, unlock, err := m.lockExisting(id)
	if err != nil || p == nil {
		return err
	}
	defer unlock()
	wasReady, err := m.markNotReady(p)
	if err != nil {
		return err
	}
	if wasReady {
		// Reported once the teardown was tried: the pod is not ready from
		// here on, whether or not it has to be retried.
		defer m.emit(EventStopped, p.ID, p.ID)
	}
	// The CRI: stopping a pod forcibly stops its containers.
	for _, c := range m.containersOf(p.ID) {
		if err := m.StopContainer(ctx, c.ID, 0); err != nil {
			return fmt.Errorf("stopping pod sandbox %s: %w", p.ID, err)
		}
	}
	if plugins := m.plugins(); plugins != nil {
		// Its containers have stopped; it is still there to look at.
		plugins.StopPodSandbox(ctx, m.nriPod(copyPod(p)))
	}
	if err := m.teardown(ctx, p); err != nil {
		return fmt.Errorf("stopping pod sandbox %s: %w", p.ID, err)
	}
	return nil
}

// markNotReady records a pod NotReady before its teardown, and says
// whether it was Ready. Recorded first: a daemon that dies during the
// teardown finishes it when it comes back (restore), and never reports a
// pod Ready whose network is half gone.
func (m *Manager) markNotReady(p *Pod) (wasReady bool, err error) {
	wasReady = p.State == Ready
	return wasReady, m.update(p, func(p *Pod) { p.State = NotReady })
}

// lockExisting finds a pod and takes its lock. It returns a nil pod, and no
// error, when the pod is unknown or was removed while waiting for the lock:
// stop and remove of what is gone succeed.
func (m *Manager) lockExisting(id string) (*Pod, func(), error) {
	m.mu.Lock()
	p, err := m.findLocked(id)
	m.mu.Unlock()
	if errdefs.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	unlock, ok := lockStill(m, p, p.ID, m.pods)
	if !ok {
		return nil, nil, nil
	}
	return p, unlock, nil
}

// teardown undoes what makes a pod run, in the reverse order of run. Each
// step can be repeated and is recorded as done, so that a teardown
// interrupted by a crash is finished by the next one.
func (m *Manager) teardown(ctx context.Context, p *Pod) error {
	if p.Init != nil {
		if err := kill(p.Init); err != nil {
			return err
		}
		// In a pod with its own user namespace what was recorded is the
		// init's holder; the init dies with it, and whatever is left in
		// the init's cgroup goes too.
		if initCgroup, err := m.opts.Cgroups.SandboxInitPath(p.CgroupPath, p.ID); err == nil {
			if err := m.killCgroup(initCgroup); err != nil {
				return err
			}
		}
	}
	if p.Network {
		if err := m.opts.Network.Teardown(ctx, m.networkPod(p, nil)); err != nil {
			return fmt.Errorf("tearing down the network (CNI DEL): %w", err)
		}
		if err := m.update(p, func(p *Pod) { p.Network = false }); err != nil {
			return err
		}
	}
	for _, t := range []ns.Type{ns.PID, ns.Net, ns.UTS, ns.IPC, ns.User} {
		if path, ok := p.Namespaces[t]; ok {
			if err := ns.Unpin(path); err != nil {
				return fmt.Errorf("releasing the %s namespace: %w", t, err)
			}
		}
	}
	if p.Shm != "" {
		if err := unix.Unmount(p.Shm, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmounting /dev/shm: %w", err)
		}
	}
	return nil
}

// Remove removes a pod, as RemovePodSandbox: it is stopped first if it
// runs, then its cgroup, files and record go. Removing an unknown pod
// succeeds.
func (m *Manager) Remove(ctx context.Context, id string) error {
	p, unlock, err := m.lockExisting(id)
	if err != nil || p == nil {
		return err
	}
	defer unlock()
	wasReady, err := m.markNotReady(p)
	if err != nil {
		return err
	}
	if wasReady {
		m.emit(EventStopped, p.ID, p.ID)
	}
	// Its containers go first: they live in its namespaces and cgroup.
	for _, c := range m.containersOf(p.ID) {
		if err := m.RemoveContainer(ctx, c.ID); err != nil {
			return fmt.Errorf("removing pod sandbox %s: %w", p.ID, err)
		}
	}
	if err := m.destroy(ctx, p); err != nil {
		return fmt.Errorf("removing pod sandbox %s: %w", p.ID, err)
	}
	m.emit(EventDeleted, p.ID, p.ID)
	if plugins := m.plugins(); plugins != nil {
		plugins.RemovePodSandbox(ctx, m.nriPod(copyPod(p)))
	}
	m.forget(p)
	return nil
}

// destroy tears a pod down and removes everything it has on the machine.
func (m *Manager) destroy(ctx context.Context, p *Pod) error {
	if err := m.teardown(ctx, p); err != nil {
		return err
	}
	if p.CgroupPath != "" {
		// Whatever still runs in the pod's cgroups (an init the record
		// never learnt of) goes with them.
		if err := m.killCgroup(p.CgroupPath); err != nil {
			return err
		}
		if initCgroup, err := m.opts.Cgroups.SandboxInitPath(p.CgroupPath, p.ID); err == nil {
			if err := m.opts.Cgroups.Delete(initCgroup); err != nil {
				return fmt.Errorf("removing the pod init's cgroup: %w", err)
			}
		}
		if err := m.opts.Cgroups.Delete(p.CgroupPath); err != nil {
			return fmt.Errorf("removing the pod cgroup: %w", err)
		}
	}
	if err := os.RemoveAll(m.stateDir(p.ID)); err != nil {
		return err
	}
	// The record goes last: until then, a crash leaves a pod to finish.
	return os.RemoveAll(m.rootDir(p.ID))
}

// killCgroup kills every process in a cgroup tree and waits until it is
// empty.
func (m *Manager) killCgroup(path string) error {
	var err error
	empty := waitUntil(5*time.Second, func() bool {
		var pids []int
		pids, err = m.opts.Cgroups.Pids(path)
		if errdefs.IsNotFound(err) || (err == nil && len(pids) == 0) {
			err = nil
			return true
		}
		if err != nil {
			return true
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		return false
	})
	if err != nil {
		return fmt.Errorf("listing the processes of cgroup %s: %w", path, err)
	}
	if !empty {
		return fmt.Errorf("processes of cgroup %s do not die", path)
	}
	return nil
}

func (m *Manager) forget(p *Pod) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pods, p.ID)
	if m.names[p.key()] == p.ID {
		delete(m.names, p.key())
	}
	delete(m.locks, p.ID)
	m.forgetSampled(p.ID)
}

// CheckNetwork runs CNI CHECK for a ready pod: a diagnosis of whether its
// network is still as CNI set it up.
func (m *Manager) CheckNetwork(ctx context.Context, id string) error {
	p, err := m.Get(id)
	if err != nil {
		return err
	}
	if !p.Network || !p.Ready() {
		return fmt.Errorf("pod sandbox %s has no pod network to check: %w", p.ID, errdefs.ErrFailedPrecondition)
	}
	return m.opts.Network.Check(ctx, m.networkPod(p, nil))
}

func (m *Manager) lookup(id string) (*Pod, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.findLocked(id)
}
