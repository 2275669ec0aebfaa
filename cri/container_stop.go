package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StopContainer is idempotent: stopping a stopped or unknown container
// succeeds, as the CRI asks.
func (s *Server) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	defer s.pods.NRIBlock()() // first: see nri.NRI.Block
	if req.GetContainerId() == "" {
		return nil, invalid("container_id", "is required")
	}
	if req.GetTimeout() < 0 {
		return nil, invalid("timeout", "must not be negative")
	}
	if err := s.pods.StopContainer(ctx, req.GetContainerId(), req.GetTimeout()); err != nil {
		return nil, err
	}
	return &runtimeapi.StopContainerResponse{}, nil
}
