package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/cri/validate"
)

// UpdateContainerResources changes a container's cgroup limits in place
// (kubelet's in-place pod resize).
func (s *Server) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	defer s.pods.NRIBlock()() // first: see nri.NRI.Block
	if req.GetContainerId() == "" {
		return nil, invalid("container_id", "is required")
	}
	if err := validate.Resources("linux", req.GetLinux()); err != nil {
		return nil, err
	}
	if err := s.pods.UpdateContainerResources(ctx, req.GetContainerId(), req.GetLinux()); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}
