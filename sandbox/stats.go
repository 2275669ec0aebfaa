package sandbox

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/runtime/cgroups"
)

// Usage is what a container or a pod uses, as the CRI's stats report it.
type Usage struct {
	Timestamp int64
	cgroups.Stats
	// NanoCores is the CPU used per second since the previous sample of
	// the same cgroup (the CRI's usage_nano_cores); 0 on the first.
	NanoCores uint64
	// Writable layer (containers only).
	LayerBytes, LayerInodes uint64
	LayerMountpoint         string
	// The pod's network interfaces (pods with a network namespace of
	// their own only).
	Network []Interface
}

type cpuSample struct {
	at    time.Time
	usage uint64
}

// minSampleGap keeps CPU rates from being computed over the few
// milliseconds between two stats calls of one kubelet scrape.
const minSampleGap = time.Second

// usage reads a cgroup of the pod or container id, and computes its CPU
// rate against the samples before.
func (m *Manager) usage(id, cgroup string) (Usage, error) {
	st, err := m.opts.Cgroups.Stats(cgroup, cgroups.Usage)
	if err != nil {
		return Usage{}, err
	}
	now := time.Now()
	u := Usage{Timestamp: now.UnixNano(), Stats: *st}
	// Under m.mu, as keep: no sample outlives its pod or container.
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ctr := m.containers[id]
	_, pod := m.pods[id]
	m.samplesMu.Lock()
	defer m.samplesMu.Unlock()
	if m.samples == nil {
		m.samples = map[string][2]cpuSample{}
	}
	// Two samples: the rate is taken against the newest one at least
	// minSampleGap old.
	s := m.samples[id]
	base := s[1]
	if now.Sub(base.at) < minSampleGap {
		base = s[0]
	}
	if dt := now.Sub(base.at); !base.at.IsZero() && dt > 0 && st.CPUUsageNanos >= base.usage {
		u.NanoCores = uint64(float64(st.CPUUsageNanos-base.usage) / dt.Seconds())
	}
	if now.Sub(s[1].at) >= minSampleGap {
		s[0] = s[1]
	}
	s[1] = cpuSample{at: now, usage: st.CPUUsageNanos}
	if ctr || pod {
		m.samples[id] = s
	}
	return u, nil
}

// usageOf is the pod's or container's sample when a allows one (sampled),
// else its cgroup read now; a Sampled call asks for the next sample.
func (m *Manager) usageOf(id, cgroup string, a Age) (u Usage, sampled bool, err error) {
	if a == Sampled {
		m.statsResample.ask(m, m.sampleUsage)
	}
	if u, ok := m.used.get(id, m.maxAge(a)); ok {
		return u, true, nil
	}
	u, err = m.usage(id, cgroup)
	return u, false, err
}

// ContainerUsage reports a running container's resource use, read now. A
// container that does not run has no cgroup to read: NotFound.
func (m *Manager) ContainerUsage(id string) (*Container, Usage, error) {
	c, err := m.GetContainer(id)
	if err != nil {
		return nil, Usage{}, err
	}
	u, err := m.UsageOf(c, Fresh)
	return c, u, err
}

// UsageOf is ContainerUsage for a copy the caller already has, fresh
// from GetContainer or a list, as old as a allows.
func (m *Manager) UsageOf(c *Container, a Age) (Usage, error) {
	if c.State != ContainerStarted {
		return Usage{}, fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrNotFound)
	}
	u, sampled, err := m.usageOf(c.ID, c.Cgroup, a)
	if err != nil || sampled {
		return u, err
	}
	// The writable layer is the upper dir: what the container wrote.
	u.LayerMountpoint = m.upperDir(c.ID)
	u.LayerBytes, u.LayerInodes = m.layerUsage(c.ID, u.LayerMountpoint, max(minSampleGap, m.maxAge(a)))
	keep(m, &m.used, c.ID, time.Unix(0, u.Timestamp), u)
	return u, nil
}

type layerSample struct {
	bytes, inodes uint64
}

// layerUsage is treeUsage of a container's upper dir, walked at most once
// per maxAge: kubelet's scrape asks for a container's stats in
// ListContainerStats and again in ListPodSandboxStats, and the walk is
// what those calls spent most on once the cgroups were read cheaply.
func (m *Manager) layerUsage(id, dir string, maxAge time.Duration) (bytes, inodes uint64) {
	if s, ok := m.layers.get(id, maxAge); ok {
		return s.bytes, s.inodes
	}
	now := time.Now()
	bytes, inodes = treeUsage(dir)
	keep(m, &m.layers, id, now, layerSample{bytes: bytes, inodes: inodes})
	return bytes, inodes
}

// treeUsage adds up the bytes of the regular files below dir, and counts
// its inodes; what cannot be read is left out.
func treeUsage(dir string) (bytes, inodes uint64) {
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		inodes++
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			bytes += uint64(info.Size())
		}
		return nil
	})
	return bytes, inodes
}

// PodUsage reports a ready pod's resource use (its cgroup holds its
// containers'), and its running containers.
func (m *Manager) PodUsage(id string, a Age) (*Pod, Usage, []*Container, error) {
	p, err := m.Get(id)
	if err != nil {
		return nil, Usage{}, nil, err
	}
	if !p.Ready() {
		return p, Usage{}, nil, fmt.Errorf("pod sandbox %s is not ready: %w", p.ID, errdefs.ErrNotFound)
	}
	u, err := m.PodUsageOf(p, a)
	if err != nil {
		return p, Usage{}, nil, err
	}
	var cs []*Container
	for _, c := range m.ContainersOf(p.ID) {
		if c.State == ContainerStarted {
			cs = append(cs, c)
		}
	}
	return p, u, cs, nil
}

// PodUsageOf is the use of a ready pod's cgroup and network, for a copy
// the caller has (from List), as old as a allows.
func (m *Manager) PodUsageOf(p *Pod, a Age) (Usage, error) {
	u, sampled, err := m.usageOf(p.ID, p.CgroupPath, a)
	if err != nil || sampled {
		return u, err
	}
	if path := p.Namespaces[ns.Net]; path != "" {
		// Left out, not an error, if it cannot be read (a pod being
		// stopped): the rest of its stats still count.
		if u.Network, err = podInterfaces(path); err != nil {
			klog.V(4).InfoS("Stats: pod network", "pod", p.ID, "err", err)
		}
	}
	keep(m, &m.used, p.ID, time.Unix(0, u.Timestamp), u)
	return u, nil
}
