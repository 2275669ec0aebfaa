package sandbox

import (
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// listBudget bounds what all pods and containers together carry into a
// List answer (metadata, labels, annotations): a kubelet takes answers of at
// most 16 MiB, and one ListPodSandbox, ListContainers or ListPodSandboxStats
// (which holds each pod's and each of its containers' attributes) that
// exceeds it fails for every caller, so that kubelet's relist stops and
// nothing can be listed to be removed. Each object is bounded on its own
// (cri/validate); this bounds their sum, leaving room for what every item
// adds (ids, states, stats).
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

// checkBudgetLocked refuses an object whose list item would take what
// pods and containers carry past listBudget; pods and containers being
// made count with their size. m.mu held: each create sums the others, a
// few thousand proto sizes, rather than keep a total that every path that
// adds or forgets an object would have to keep right.
func (m *Manager) checkBudgetLocked(size int) error {
	used := m.creating
	for _, p := range m.pods {
		used += podListSize(p.Config)
	}
	for _, st := range m.starts {
		used += st.size
	}
	for _, c := range m.containers {
		used += containerListSize(c.Config)
	}
	if used+size > listBudget {
		return fmt.Errorf("pods and containers carry %d bytes of metadata, labels and annotations; %d more would pass the %d that keep List answers within what a kubelet accepts: %w", used, size, listBudget, errdefs.ErrResourceExhausted)
	}
	return nil
}
