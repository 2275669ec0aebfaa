package cri

import (
	"context"
	"strings"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/oci/runtime/cgroups"
	"github.com/husk-runtime/husk/sandbox"
)

// ContainerStats reports a running container's CPU, memory and writable
// layer, from its cgroup and upper dir.
func (s *Server) ContainerStats(_ context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id", "is required")
	}
	c, u, err := s.pods.ContainerUsage(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: containerStats(c, u)}, nil
}

// ListContainerStats reports every running container the filter matches,
// from the last samples (sandbox.Sampled); kubelet builds its summary API
// (and evictions) on it.
func (s *Server) ListContainerStats(_ context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	f := req.GetFilter()
	var out []*runtimeapi.ContainerStats
	for _, c := range s.pods.ListContainers() {
		if c.State != sandbox.ContainerStarted ||
			(f.GetId() != "" && !strings.HasPrefix(c.ID, f.GetId())) ||
			(f.GetPodSandboxId() != "" && !strings.HasPrefix(c.PodID, f.GetPodSandboxId())) ||
			!labelsMatch(c.Config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		u, err := s.pods.UsageOf(c, sandbox.Sampled)
		if errdefs.IsNotFound(err) {
			continue // ended meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, containerStats(c, u))
	}
	return &runtimeapi.ListContainerStatsResponse{Stats: out}, nil
}

func containerStats(c *sandbox.Container, u sandbox.Usage) *runtimeapi.ContainerStats {
	st := &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{
			Id: c.ID, Metadata: c.Config.GetMetadata(), Labels: c.Config.GetLabels(), Annotations: c.Config.GetAnnotations(),
		},
		Cpu:    cpuUsage(u),
		Memory: memoryUsage(u),
		WritableLayer: &runtimeapi.FilesystemUsage{
			Timestamp:  u.Timestamp,
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: u.LayerMountpoint},
			UsedBytes:  &runtimeapi.UInt64Value{Value: u.LayerBytes},
			InodesUsed: &runtimeapi.UInt64Value{Value: u.LayerInodes},
		},
		Swap: &runtimeapi.SwapUsage{Timestamp: u.Timestamp, SwapUsageBytes: &runtimeapi.UInt64Value{Value: u.SwapUsageBytes}},
		Io:   ioUsage(u),
	}
	return st
}

// ioUsage has no pressure stall information where the kernel gives none
// (cgroup v1), but is there all the same: kubelet reports a pod's io
// (its time) only when the runtime sends it, as cAdvisor always does.
func ioUsage(u sandbox.Usage) *runtimeapi.IoUsage {
	return &runtimeapi.IoUsage{Timestamp: u.Timestamp, Psi: psi(u.IOPressure)}
}

// psi is KEP-4205's pressure stall information, nil without it.
func psi(p *cgroups.Pressure) *runtimeapi.PsiStats {
	if p == nil {
		return nil
	}
	data := func(d cgroups.PressureData) *runtimeapi.PsiData {
		return &runtimeapi.PsiData{Total: d.TotalNanos, Avg10: d.Avg10, Avg60: d.Avg60, Avg300: d.Avg300}
	}
	return &runtimeapi.PsiStats{Some: data(p.Some), Full: data(p.Full)}
}

func cpuUsage(u sandbox.Usage) *runtimeapi.CpuUsage {
	return &runtimeapi.CpuUsage{
		Timestamp:            u.Timestamp,
		UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: u.CPUUsageNanos},
		UsageNanoCores:       &runtimeapi.UInt64Value{Value: u.NanoCores},
		Psi:                  psi(u.CPUPressure),
	}
}

func memoryUsage(u sandbox.Usage) *runtimeapi.MemoryUsage {
	return &runtimeapi.MemoryUsage{
		Timestamp:       u.Timestamp,
		WorkingSetBytes: &runtimeapi.UInt64Value{Value: u.MemoryWorkingSetBytes},
		AvailableBytes:  &runtimeapi.UInt64Value{Value: u.MemoryAvailableBytes},
		UsageBytes:      &runtimeapi.UInt64Value{Value: u.MemoryUsageBytes},
		RssBytes:        &runtimeapi.UInt64Value{Value: u.MemoryRSSBytes},
		PageFaults:      &runtimeapi.UInt64Value{Value: u.PageFaults},
		MajorPageFaults: &runtimeapi.UInt64Value{Value: u.MajorPageFaults},
		Psi:             psi(u.MemoryPressure),
	}
}
