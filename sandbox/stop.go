package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/husk-runtime/husk/network/ns"
)

// Stop stops a pod, as StopPodSandbox: its processes are killed, its
// network torn down (CNI DEL, once) and its namespaces released; it stays
// listed as NotReady until removed. Stopping a stopped or unknown pod
// succeeds: kubelet retries stops until they succeed.
func (m *Manager) Stop(ctx context.Context, id string) error {
	p, err := m.lookup(id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	unlock := m.lockPod(p.ID)
	defer unlock()
	if p.State == Creating {
		return fmt.Errorf("pod sandbox %s is still being created: %w", p.ID, errdefs.ErrFailedPrecondition)
	}
	if err := m.teardown(ctx, p); err != nil {
		return fmt.Errorf("stopping pod sandbox %s: %w", p.ID, err)
	}
	if p.State != NotReady {
		m.mu.Lock()
		p.State = NotReady
		m.mu.Unlock()
		if err := p.save(m.rootDir(p.ID)); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manager) lookup(id string) (*Pod, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.findLocked(id)
}

// teardown undoes what makes a pod run, in the reverse order of run. Each
// step can be repeated and is recorded as done, so that a teardown
// interrupted by a crash is finished by the next one.
func (m *Manager) teardown(ctx context.Context, p *Pod) error {
	if p.Init != nil {
		if err := kill(p.Init); err != nil {
			return err
		}
	}
	if p.Network {
		if err := m.opts.Network.Teardown(ctx, m.networkPod(p, nil)); err != nil {
			return fmt.Errorf("tearing down the network (CNI DEL): %w", err)
		}
		m.mu.Lock()
		p.Network = false
		m.mu.Unlock()
		if err := p.save(m.rootDir(p.ID)); err != nil {
			return err
		}
	}
	for _, t := range []ns.Type{ns.PID, ns.Net, ns.UTS, ns.IPC} {
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
	p, err := m.lookup(id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	unlock := m.lockPod(p.ID)
	defer unlock()
	if p.State == Creating {
		return fmt.Errorf("pod sandbox %s is still being created: %w", p.ID, errdefs.ErrFailedPrecondition)
	}
	if err := m.destroy(ctx, p); err != nil {
		return fmt.Errorf("removing pod sandbox %s: %w", p.ID, err)
	}
	m.forget(p)
	return nil
}

// destroy tears a pod down and removes everything it has on the machine.
func (m *Manager) destroy(ctx context.Context, p *Pod) error {
	if err := m.teardown(ctx, p); err != nil {
		return err
	}
	if p.Init != nil {
		if initCgroup, err := m.opts.Cgroups.ContainerPath(p.CgroupPath, "init"); err == nil {
			if err := m.opts.Cgroups.Delete(initCgroup); err != nil {
				return fmt.Errorf("removing the pod init's cgroup: %w", err)
			}
		}
	}
	if p.CgroupPath != "" {
		if err := m.opts.Cgroups.Delete(p.CgroupPath); err != nil {
			return fmt.Errorf("removing the pod cgroup: %w", err)
		}
	}
	if err := os.RemoveAll(m.stateDir(p.ID)); err != nil {
		return err
	}
	// The record goes last: until then, a crash leaves a pod to finish.
	if err := os.RemoveAll(m.rootDir(p.ID)); err != nil {
		return err
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
}
