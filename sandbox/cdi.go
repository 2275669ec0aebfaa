package sandbox

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"tags.cncf.io/container-device-interface/pkg/cdi"
)

// injectCDI applies to a container's spec what the CDI specs say of the
// devices it asks for (CDI_devices, which kubelet fills from device
// plugins and DRA drivers, and the older cdi.k8s.io/ annotations): device
// nodes and their cgroup rules, mounts, environment and hooks. An unknown
// device is the request's error; a spec that cannot be applied is the
// node's.
func (m *Manager) injectCDI(s *specs.Spec, cfg *runtimeapi.ContainerConfig) error {
	var names []string
	for _, d := range cfg.GetCDIDevices() {
		names = append(names, d.GetName())
	}
	_, annotated, err := cdi.ParseAnnotations(cfg.GetAnnotations())
	if err != nil {
		return fmt.Errorf("config.annotations: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	names = append(names, annotated...)
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		return nil
	}
	if m.opts.CDI == nil {
		return fmt.Errorf("config.CDI_devices: CDI is off in husk's config ([cdi] enable): %w", errdefs.ErrFailedPrecondition)
	}
	unresolved, err := m.opts.CDI.InjectDevices(s, names...)
	if len(unresolved) > 0 {
		return fmt.Errorf("config.CDI_devices: no CDI spec in %s names %s: %w",
			strings.Join(m.opts.CDI.GetSpecDirectories(), ", "), strings.Join(unresolved, ", "), errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return fmt.Errorf("config.CDI_devices: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	return nil
}
