package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/cri/validate"
)

// UpdatePodSandboxResources applies a resized pod's resources to its cgroup
// (kubelet calls it after resizing the pod's own cgroup, best effort).
func (s *Server) UpdatePodSandboxResources(ctx context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	defer s.pods.NRIBlock()() // first: see nri.NRI.Block
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id", "is required")
	}
	if err := validate.PodResources("overhead", req.GetOverhead()); err != nil {
		return nil, err
	}
	if err := validate.PodResources("resources", req.GetResources()); err != nil {
		return nil, err
	}
	if err := s.pods.UpdatePodResources(ctx, req.GetPodSandboxId(), req.GetOverhead(), req.GetResources()); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdatePodSandboxResourcesResponse{}, nil
}
