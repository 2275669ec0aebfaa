package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemoveContainer forcibly removes a container, running or not; an unknown
// one succeeds.
func (s *Server) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	defer s.pods.NRIBlock()() // first: see nri.NRI.Block
	if req.GetContainerId() == "" {
		return nil, invalid("container_id", "is required")
	}
	if err := s.pods.RemoveContainer(ctx, req.GetContainerId()); err != nil {
		return nil, err
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}
