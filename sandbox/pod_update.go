package sandbox

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

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
		m.forgetUse(p.ID)
	})
}
