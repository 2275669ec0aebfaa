package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemovePodSandbox stops the pod if needed and removes it with its
// containers; an unknown id succeeds.
func (s *Server) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	defer s.pods.NRIBlock()() // first: see nri.NRI.Block
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id", "is required")
	}
	if err := s.pods.Remove(ctx, req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}
