package cri

import (
	"context"
	"strings"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/sandbox"
)

// PodSandboxStats reports a ready pod's use, from its cgroup (which holds
// its containers'), with its running containers' own, read now.
func (s *Server) PodSandboxStats(_ context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id", "is required")
	}
	p, u, cs, err := s.pods.PodUsage(req.GetPodSandboxId(), sandbox.Fresh)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: s.podStats(p, u, cs, sandbox.Fresh)}, nil
}

// ListPodSandboxStats reports every ready pod the filter matches, from the
// last samples (sandbox.Sampled). The containers are listed once, not
// once per pod.
func (s *Server) ListPodSandboxStats(_ context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := req.GetFilter()
	running := map[string][]*sandbox.Container{}
	for _, c := range s.pods.ListContainers() {
		if c.State == sandbox.ContainerStarted {
			running[c.PodID] = append(running[c.PodID], c)
		}
	}
	var out []*runtimeapi.PodSandboxStats
	for _, p := range s.pods.List() {
		if !p.Ready() || (f.GetId() != "" && !strings.HasPrefix(p.ID, f.GetId())) || !labelsMatch(p.Config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		u, err := s.pods.PodUsageOf(p, sandbox.Sampled)
		if errdefs.IsNotFound(err) {
			continue // stopped meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s.podStats(p, u, running[p.ID], sandbox.Sampled))
	}
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: out}, nil
}

// podStats is a pod's stats with those of its running containers cs.
func (s *Server) podStats(p *sandbox.Pod, u sandbox.Usage, cs []*sandbox.Container, a sandbox.Age) *runtimeapi.PodSandboxStats {
	st := &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{
			Id: p.ID, Metadata: p.Config.GetMetadata(), Labels: p.Config.GetLabels(), Annotations: p.Config.GetAnnotations(),
		},
		Linux: &runtimeapi.LinuxPodSandboxStats{
			Cpu:     cpuUsage(u),
			Memory:  memoryUsage(u),
			Process: &runtimeapi.ProcessUsage{Timestamp: u.Timestamp, ProcessCount: &runtimeapi.UInt64Value{Value: u.Pids}},
			Io:      ioUsage(u),
		},
	}
	if len(u.Network) > 0 {
		st.Linux.Network = networkUsage(u)
	}
	for _, c := range cs {
		cu, err := s.pods.UsageOf(c, a)
		if err != nil {
			continue // ended meanwhile
		}
		st.Linux.Containers = append(st.Linux.Containers, containerStats(c, cu))
	}
	return st
}

// networkUsage is the pod's interfaces, eth0 (where CNI puts the pod's
// interface, kubelet's default) as the default one.
func networkUsage(u sandbox.Usage) *runtimeapi.NetworkUsage {
	n := &runtimeapi.NetworkUsage{Timestamp: u.Timestamp}
	for _, i := range u.Network {
		iu := &runtimeapi.NetworkInterfaceUsage{
			Name:     i.Name,
			RxBytes:  &runtimeapi.UInt64Value{Value: i.RxBytes},
			RxErrors: &runtimeapi.UInt64Value{Value: i.RxErrors},
			TxBytes:  &runtimeapi.UInt64Value{Value: i.TxBytes},
			TxErrors: &runtimeapi.UInt64Value{Value: i.TxErrors},
		}
		n.Interfaces = append(n.Interfaces, iu)
		if i.Name == "eth0" || n.DefaultInterface == nil {
			n.DefaultInterface = iu
		}
	}
	return n
}
