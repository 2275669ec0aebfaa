package cri

import (
	"context"
	"fmt"
	"maps"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Status reports the runtime ready, and the network ready once a CNI
// network config is loaded; until then kubelet runs only host-network pods.
func (s *Server) Status(_ context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	netReady, reason, message := s.pods.Network().Status()
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
			{Type: runtimeapi.RuntimeReady, Status: true},
			{Type: runtimeapi.NetworkReady, Status: netReady, Reason: reason, Message: message},
		}},
		RuntimeHandlers: s.runtimeHandlers(),
		// Strict supplementary groups are applied, and ContainerStatus
		// reports the user each container starts as.
		// mount_options of CRI mounts are applied too.
		Features: &runtimeapi.RuntimeFeatures{SupplementalGroupsPolicy: true, MountOptions: true},
	}
	if req.GetVerbose() {
		resp.Info = maps.Clone(s.opts.Info)
		if resp.Info == nil {
			resp.Info = map[string]string{}
		}
		resp.Info["network"] = fmt.Sprintf("%q", s.pods.Network().NetworkName())
	}
	return resp, nil
}

// runtimeHandlers are husk's own runtime ("") and the configured
// runc-compatible ones, with what both the runtime and the kernel offer.
func (s *Server) runtimeHandlers() []*runtimeapi.RuntimeHandler {
	var out []*runtimeapi.RuntimeHandler
	for _, h := range s.pods.Handlers() {
		rf := s.pods.HandlerFeatures(h)
		f := &runtimeapi.RuntimeHandlerFeatures{
			RecursiveReadOnlyMounts: rf.RecursiveReadOnlyMounts && s.opts.RecursiveReadOnlyMounts,
			UserNamespaces:          rf.UserNamespaces && s.opts.UserNamespaces,
		}
		out = append(out, &runtimeapi.RuntimeHandler{Name: h, Features: f})
	}
	return out
}
