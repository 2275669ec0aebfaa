package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
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

func (m *Manager) usage(cgroup string) (Usage, error) {
	st, err := m.opts.Cgroups.Stats(cgroup)
	if err != nil {
		return Usage{}, err
	}
	now := time.Now()
	u := Usage{Timestamp: now.UnixNano(), Stats: *st}
	m.samplesMu.Lock()
	defer m.samplesMu.Unlock()
	if m.samples == nil {
		m.samples = map[string][2]cpuSample{}
	}
	// Two samples: the rate is taken against the newest one at least
	// minSampleGap old.
	s := m.samples[cgroup]
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
	m.samples[cgroup] = s
	return u, nil
}

func (m *Manager) forgetSamples(cgroup string) {
	m.samplesMu.Lock()
	delete(m.samples, cgroup)
	m.samplesMu.Unlock()
}

// ContainerUsage reports a running container's resource use. A container
// that does not run has no cgroup to read: NotFound.
func (m *Manager) ContainerUsage(id string) (*Container, Usage, error) {
	c, err := m.GetContainer(id)
	if err != nil {
		return nil, Usage{}, err
	}
	if c.State != ContainerStarted {
		return c, Usage{}, fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrNotFound)
	}
	u, err := m.usage(c.Cgroup)
	if err != nil {
		return c, Usage{}, err
	}
	// The writable layer is the upper dir: what the container wrote.
	u.LayerMountpoint = m.upperDir(c.ID)
	u.LayerBytes, u.LayerInodes = treeUsage(u.LayerMountpoint)
	return c, u, nil
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
// containers').
func (m *Manager) PodUsage(id string) (*Pod, Usage, []*Container, error) {
	p, err := m.Get(id)
	if err != nil {
		return nil, Usage{}, nil, err
	}
	if !p.Ready() {
		return p, Usage{}, nil, fmt.Errorf("pod sandbox %s is not ready: %w", p.ID, errdefs.ErrNotFound)
	}
	u, err := m.usage(p.CgroupPath)
	if err != nil {
		return p, Usage{}, nil, err
	}
	if path := p.Namespaces[ns.Net]; path != "" {
		// Left out, not an error, if it cannot be read (a pod being
		// stopped): the rest of its stats still count.
		if u.Network, err = podInterfaces(path); err != nil {
			klog.V(4).InfoS("Stats: pod network", "pod", p.ID, "err", err)
		}
	}
	var cs []*Container
	for _, c := range m.ListContainers() {
		if c.PodID == p.ID && c.State == ContainerStarted {
			cs = append(cs, c)
		}
	}
	return p, u, cs, nil
}

// UpdateContainerResources applies new limits to a container's cgroup.
func (m *Manager) UpdateContainerResources(ctx context.Context, id string, r *runtimeapi.LinuxContainerResources) error {
	c, unlock, err := m.lockContainer(id)
	if err != nil {
		return err
	}
	defer unlock()
	if r == nil {
		return nil
	}
	// cgroup v1 refuses a limit below what it cannot reclaim (EBUSY); v2
	// takes it and OOM-kills the container. Both are the container's state,
	// and kubelet's resize must hear so rather than see the container die.
	if limit := r.GetMemoryLimitInBytes(); limit > 0 {
		if st, err := m.opts.Cgroups.Stats(c.Cgroup); err == nil && uint64(limit) < st.MemoryWorkingSetBytes {
			return fmt.Errorf("linux.memory_limit_in_bytes: %d is below the %d bytes container %s uses now: %w", limit, st.MemoryWorkingSetBytes, c.ID, errdefs.ErrFailedPrecondition)
		}
	}
	if c.State == ContainerCreated && m.opts.Cgroups.CreatedAtStart() {
		// No cgroup yet: the spec it is made from at start gets them.
		if err := m.updateSpecResources(c.ID, cgroups.ResourcesFromCRI(r)); err != nil {
			return fmt.Errorf("updating the resources of container %s: %w", c.ID, err)
		}
	} else if err := m.opts.Cgroups.Update(c.Cgroup, cgroups.ResourcesFromCRI(r)); err != nil {
		return fmt.Errorf("updating the resources of container %s: %w", c.ID, err)
	}
	// Another runtime's cgroup below has them too, while it exists.
	if inner := m.processCgroup(c); inner != c.Cgroup && m.opts.Cgroups.Exists(inner) {
		if err := m.opts.Cgroups.Update(inner, runtimeResources(cgroups.ResourcesFromCRI(r), m.opts.Cgroups)); err != nil {
			return fmt.Errorf("updating the resources of container %s: %w", c.ID, err)
		}
	}
	// Recorded, for ContainerStatus (kubelet's in-place resize reads it).
	return m.updateContainer(c, func(c *Container) {
		cfg := proto.Clone(c.Config).(*runtimeapi.ContainerConfig)
		if cfg.Linux == nil {
			cfg.Linux = &runtimeapi.LinuxContainerConfig{}
		}
		cfg.Linux.Resources = r
		c.Config = cfg
	})
}

// updateSpecResources sets in a container's spec the resources res has
// (Update's rule: what res leaves nil stays as it was).
func (m *Manager) updateSpecResources(id string, res *specs.LinuxResources) error {
	if err := m.opts.Cgroups.Check(res); err != nil {
		return err
	}
	s, err := m.readSpec(id)
	if err != nil {
		return err
	}
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	if s.Linux.Resources == nil {
		s.Linux.Resources = &specs.LinuxResources{}
	}
	cur := s.Linux.Resources
	if res.Memory != nil {
		cur.Memory = res.Memory
	}
	if res.CPU != nil {
		cur.CPU = res.CPU
	}
	if res.Pids != nil {
		cur.Pids = res.Pids
	}
	if res.HugepageLimits != nil {
		cur.HugepageLimits = res.HugepageLimits
	}
	if res.Unified != nil {
		cur.Unified = res.Unified
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(m.bundleDir(id), "config.json"), b, 0o600)
}

// UpdatePodResources records a pod's new resources, the sum of its
// containers' and its overhead (kubelet's in-place pod resize), and
// applies them to the pod's cgroup where husk limits it (a pod without a
// cgroup_parent: see podResources).
func (m *Manager) UpdatePodResources(ctx context.Context, id string, overhead, resources *runtimeapi.LinuxContainerResources) error {
	p, unlock, err := m.lockExisting(id)
	if err != nil {
		return err
	}
	if p == nil {
		return fmt.Errorf("pod sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	defer unlock()
	l, _ := proto.Clone(p.Config.GetLinux()).(*runtimeapi.LinuxPodSandboxConfig)
	if l == nil {
		l = &runtimeapi.LinuxPodSandboxConfig{}
	}
	if resources != nil {
		l.Resources = resources
	}
	if overhead != nil {
		l.Overhead = overhead
	}
	if res := podResources(l); res != nil {
		if err := m.opts.Cgroups.Update(p.CgroupPath, res); err != nil {
			return fmt.Errorf("updating the resources of pod %s: %w", p.ID, err)
		}
	}
	return m.update(p, func(p *Pod) {
		cfg := proto.Clone(p.Config).(*runtimeapi.PodSandboxConfig)
		cfg.Linux = l
		p.Config = cfg
	})
}
