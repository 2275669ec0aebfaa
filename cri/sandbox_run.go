package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/cri/validate"
)

// RunPodSandbox creates a pod and makes it ready; everything done is undone
// when a step fails (sandbox.Manager.Run).
func (s *Server) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	defer s.pods.NRIBlock()() // first: see nri.NRI.Block
	if req.GetConfig() == nil {
		return nil, invalid("config", "is required")
	}
	if err := validate.PodSandboxConfig(req.GetConfig()); err != nil {
		return nil, err
	}
	id, err := s.pods.Run(ctx, req.GetConfig(), req.GetRuntimeHandler())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}
