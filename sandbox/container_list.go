package sandbox

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// findContainerLocked finds a container by id or unique id prefix.
func (m *Manager) findContainerLocked(id string) (*Container, error) {
	return findByID(m.containers, id, "container")
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
	return m.freshCopies(all)
}

// ContainersOf returns copies of a pod's containers, oldest first.
func (m *Manager) ContainersOf(podID string) []*Container {
	return m.freshCopies(m.containersOf(podID))
}

// freshCopies are copies of cs, up to date with their monitors, oldest
// first; those still being created are left out. A container whose
// monitor and exit file are both watched is as recorded: its exit is
// recorded as the monitor writes it (exitwatch.go), so a list, which
// kubelet makes every second, reads no file per container.
func (m *Manager) freshCopies(cs []*Container) []*Container {
	out := make([]*Container, 0, len(cs))
	for _, c := range cs {
		m.mu.Lock()
		listed := c.listed
		m.mu.Unlock()
		if !listed {
			m.refresh(c)
		}
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
