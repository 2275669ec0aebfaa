package cri

import (
	"context"
	"path/filepath"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CheckpointContainer dumps a running container into an archive at the
// request's location (kubelet's checkpoint API); the container goes on
// running. A timeout of 0 is none.
func (s *Server) CheckpointContainer(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id", "is required")
	}
	loc := req.GetLocation()
	if loc == "" || !filepath.IsAbs(loc) || filepath.Clean(loc) != loc {
		return nil, invalid("location", "must be an absolute, clean path of the archive to write")
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
