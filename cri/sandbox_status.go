package cri

import (
	"context"
	"encoding/json"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/sandbox"
)

// PodSandboxStatus reports a pod; verbose adds husk's own record of it and,
// for a pod on the pod network, the outcome of a CNI CHECK.
func (s *Server) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id", "is required")
	}
	p, err := s.pods.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	// The time is taken first: the statuses are at least as new as it
	// says.
	now := time.Now().UnixNano()
	resp := &runtimeapi.PodSandboxStatusResponse{Status: podStatus(p), ContainersStatuses: s.containerStatuses(p.ID), Timestamp: now}
	if req.GetVerbose() {
		b, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(b)}
		if p.Network && p.Ready() {
			check := "ok"
			if err := s.pods.CheckNetwork(ctx, p.ID); err != nil {
				check = err.Error()
			}
			c, _ := json.Marshal(check)
			resp.Info["networkCheck"] = string(c)
		}
	}
	return resp, nil
}

func podState(p *sandbox.Pod) runtimeapi.PodSandboxState {
	if p.Ready() {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

func podStatus(p *sandbox.Pod) *runtimeapi.PodSandboxStatus {
	st := &runtimeapi.PodSandboxStatus{
		Id:             p.ID,
		Metadata:       p.Config.GetMetadata(),
		State:          podState(p),
		CreatedAt:      p.CreatedAt,
		Labels:         p.Config.GetLabels(),
		Annotations:    p.Config.GetAnnotations(),
		RuntimeHandler: p.RuntimeHandler,
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{
			Options: p.Config.GetLinux().GetSecurityContext().GetNamespaceOptions(),
		}},
	}
	if len(p.IPs) > 0 {
		st.Network = &runtimeapi.PodSandboxNetworkStatus{Ip: p.IPs[0]}
		for _, ip := range p.IPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	return st
}
