package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StartContainer runs a created container; it fails, with the runtime's
// reason, when the container's command cannot be started.
func (s *Server) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	defer s.pods.NRIBlock()() // first: see nri.NRI.Block
	if req.GetContainerId() == "" {
		return nil, invalid("container_id", "is required")
	}
	if err := s.pods.StartContainer(ctx, req.GetContainerId()); err != nil {
		return nil, err
	}
	return &runtimeapi.StartContainerResponse{}, nil
}
