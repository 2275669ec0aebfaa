package cri

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/cri/validate"
)

// ExecSync runs a command in a running container and returns its output
// and exit code; kubelet's exec probes use it.
func (s *Server) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id", "is required")
	}
	if err := validate.Command("cmd", req.GetCmd()); err != nil {
		return nil, err
	}
	if req.GetTimeout() < 0 {
		return nil, invalid("timeout", "must not be negative")
	}
	stdout, stderr, code, err := s.pods.ExecSync(ctx, req.GetContainerId(), req.GetCmd(), time.Duration(req.GetTimeout())*time.Second)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecSyncResponse{Stdout: stdout, Stderr: stderr, ExitCode: code}, nil
}
