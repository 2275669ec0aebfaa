package sandbox

import (
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// listBudget bounds what all pods together, and apart all containers
// together, carry into a List answer (metadata, labels, annotations): a
// kubelet takes answers of at most 16 MiB, and one ListPodSandbox or
// ListContainers (or their stats) that exceeds it fails for every caller,
// so that kubelet's relist stops and nothing can be listed to be removed.
// Each object is bounded on its own (cri/validate); this bounds their sum,
// leaving room for what every item adds (ids, states, stats).
const listBudget = 12 << 20

// listItemOverhead stands for the fields of a list item beyond those
// counted: ids, state, times, the runtime handler, the image reference.
const listItemOverhead = 512

func podListSize(cfg *runtimeapi.PodSandboxConfig) int {
	return proto.Size(&runtimeapi.PodSandbox{Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations()}) + listItemOverhead
}

func containerListSize(cfg *runtimeapi.ContainerConfig) int {
	return proto.Size(&runtimeapi.Container{Metadata: cfg.GetMetadata(), Image: cfg.GetImage(), Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations()}) + listItemOverhead
}

// checkPodBudgetLocked refuses a pod whose list item would take the pods'
// list past listBudget; pods being made count with their size. m.mu held.
func (m *Manager) checkPodBudgetLocked(size int) error {
	used := 0
	for _, p := range m.pods {
		used += podListSize(p.Config)
	}
	for _, st := range m.starts {
		used += st.size
	}
	if used+size > listBudget {
		return fmt.Errorf("pods' metadata, labels and annotations take %d bytes; %d more would pass the %d that keep ListPodSandbox within what a kubelet accepts: %w", used, size, listBudget, errdefs.ErrResourceExhausted)
	}
	return nil
}

// checkContainerBudgetLocked is checkPodBudgetLocked for containers.
func (m *Manager) checkContainerBudgetLocked(size int) error {
	used := 0
	for _, c := range m.containers {
		used += containerListSize(c.Config)
	}
	used += m.creating
	if used+size > listBudget {
		return fmt.Errorf("containers' metadata, labels and annotations take %d bytes; %d more would pass the %d that keep ListContainers within what a kubelet accepts: %w", used, size, listBudget, errdefs.ErrResourceExhausted)
	}
	return nil
}
