package cri

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/sandbox"
)

// ListPodSandbox lists pods; a filter's fields must all match (id as a
// prefix, as crictl passes short ids; state; every label of the selector).
func (s *Server) ListPodSandbox(_ context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	var out []*runtimeapi.PodSandbox
	for _, p := range s.pods.List() {
		if f.GetId() != "" && !strings.HasPrefix(p.ID, f.GetId()) {
			continue
		}
		if f.GetState() != nil && f.GetState().GetState() != podState(p) {
			continue
		}
		if !labelsMatch(p.Config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, toCRIPod(p))
	}
	return &runtimeapi.ListPodSandboxResponse{Items: out}, nil
}

func toCRIPod(p *sandbox.Pod) *runtimeapi.PodSandbox {
	return &runtimeapi.PodSandbox{
		Id:             p.ID,
		Metadata:       p.Config.GetMetadata(),
		State:          podState(p),
		CreatedAt:      p.CreatedAt,
		Labels:         p.Config.GetLabels(),
		Annotations:    p.Config.GetAnnotations(),
		RuntimeHandler: p.RuntimeHandler,
	}
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
