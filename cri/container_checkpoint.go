package cri

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/cri/validate"
)

// CheckpointContainer dumps a running container into an archive at the
// request's location (kubelet's checkpoint API); the container goes on
// running. A timeout of 0 is none.
func (s *Server) CheckpointContainer(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id", "is required")
	}
	loc := req.GetLocation()
	if err := validate.AbsolutePath("location", loc); err != nil {
		return nil, err
	}
	if req.GetTimeout() < 0 {
		return nil, invalid("timeout", "must not be negative")
	}
	timeout := time.Duration(req.GetTimeout()) * time.Second
	if err := s.pods.CheckpointContainer(ctx, req.GetContainerId(), loc, timeout); err != nil {
		return nil, err
	}
	return &runtimeapi.CheckpointContainerResponse{}, nil
}
