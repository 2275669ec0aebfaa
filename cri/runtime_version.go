package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	runtimeName = "husk"
	// kubeAPIVersion is the version of the kubelet runtime API, which
	// kubelet checks but which has been "0.1.0" since the CRI began.
	kubeAPIVersion    = "0.1.0"
	runtimeAPIVersion = "v1"
)

// Version answers whatever version the client asks about: the CRI has one
// API version, v1.
func (s *Server) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           kubeAPIVersion,
		RuntimeName:       runtimeName,
		RuntimeVersion:    s.opts.Version,
		RuntimeApiVersion: runtimeAPIVersion,
	}, nil
}
