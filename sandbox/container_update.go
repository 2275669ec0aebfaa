package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/oci/runtime/cgroups"
)

// UpdateContainerResources applies new limits to a container's cgroup,
// as NRI plugins amend them.
func (m *Manager) UpdateContainerResources(ctx context.Context, id string, r *runtimeapi.LinuxContainerResources) error {
	return m.updateContainerResources(ctx, id, r, true)
}

// updateContainerResources is UpdateContainerResources; a plugin's own
// update (askNRI false) is not put to the plugins again.
func (m *Manager) updateContainerResources(ctx context.Context, id string, r *runtimeapi.LinuxContainerResources, askNRI bool) (err error) {
	c, unlock, err := m.lockContainer(id)
	if err != nil {
		return err
	}
	defer unlock()
	if r == nil {
		return nil
	}
	if plugins := m.plugins(); askNRI && plugins != nil {
		pod, ctr := m.nriObjects(c.ID, c.PodID)
		merged, nerr := plugins.UpdateContainer(ctx, pod, ctr, nriResources(r))
		if nerr != nil {
			// Not wrapped: the plugin's error is a status of its own.
			return fmt.Errorf("NRI plugins refused the update: %v: %w", nerr, errdefs.ErrFailedPrecondition)
		}
		if merged != nil {
			r = withNRIResources(r, merged)
		}
		defer func() {
			// The update's outcome: plugins hear of it only once applied.
			if err == nil {
				plugins.PostUpdateContainer(ctx, pod, ctr)
			}
		}()
	}
	// cgroup v1 refuses a limit below what it cannot reclaim (EBUSY); v2
	// takes it and OOM-kills the container. Both are the container's state,
	// and kubelet's resize must hear so rather than see the container die.
	if limit := r.GetMemoryLimitInBytes(); limit > 0 {
		if st, err := m.opts.Cgroups.Stats(c.Cgroup, cgroups.Usage); err == nil && uint64(limit) < st.MemoryWorkingSetBytes {
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
	rt := m.runtimeOf(c)
	if inner := rt.ProcessCgroup(c.Cgroup); inner != c.Cgroup && m.opts.Cgroups.Exists(inner) {
		if err := m.opts.Cgroups.Update(inner, rt.InnerLimits(cgroups.ResourcesFromCRI(r))); err != nil {
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
		m.forgetUse(c.ID)
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
