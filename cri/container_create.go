package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/cri/validate"
)

// CreateContainer makes a container in a ready pod; nothing runs until
// StartContainer. A failure leaves nothing behind.
func (s *Server) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	defer s.pods.NRIBlock()() // first: see nri.NRI.Block
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id", "is required")
	}
	if req.GetConfig() == nil {
		return nil, invalid("config", "is required")
	}
	if err := validate.ContainerConfig(req.GetConfig()); err != nil {
		return nil, err
	}
	id, err := s.pods.CreateContainer(ctx, req.GetPodSandboxId(), req.GetConfig())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}
