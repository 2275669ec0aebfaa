package cgroups

import (
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ResourcesFromCRI maps CRI container resources to OCI ones. Zero means
// "not set" in CRI, so zero fields stay nil. As containerd does, a memory
// limit without a swap limit also sets the swap limit (memory+swap, v1's
// meaning) to the memory limit: no swap unless asked for. The values are
// the v1 ones CRI speaks; Create and Update turn them into v2 files on v2
// (cpu shares into cpu.weight, memory+swap into memory.swap.max).
// nil in, nil out.
func ResourcesFromCRI(r *runtimeapi.LinuxContainerResources) *specs.LinuxResources {
	if r == nil {
		return nil
	}
	out := &specs.LinuxResources{}
	cpu := &specs.LinuxCPU{
		Cpus: r.GetCpusetCpus(),
		Mems: r.GetCpusetMems(),
	}
	if v := r.GetCpuPeriod(); v != 0 {
		p := uint64(v)
		cpu.Period = &p
	}
	if v := r.GetCpuQuota(); v != 0 {
		cpu.Quota = &v
	}
	if v := r.GetCpuShares(); v != 0 {
		s := uint64(v)
		cpu.Shares = &s
	}
	if cpu.Period != nil || cpu.Quota != nil || cpu.Shares != nil || cpu.Cpus != "" || cpu.Mems != "" {
		out.CPU = cpu
	}
	limit, swap := r.GetMemoryLimitInBytes(), r.GetMemorySwapLimitInBytes()
	if limit != 0 || swap != 0 {
		out.Memory = &specs.LinuxMemory{}
		if limit != 0 {
			out.Memory.Limit = &limit
			if swap == 0 {
				swap = limit
			}
		}
		out.Memory.Swap = &swap
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	if u := r.GetUnified(); len(u) > 0 {
		out.Unified = maps.Clone(u)
	}
	return out
}

// v2Resources is what applyV2 writes: the cgroup2 package's resources,
// the raw unified files, and the controllers they need (hugepage limits
// aside: applyV2 drops them when the host has no hugetlb controller).
type v2Resources struct {
	res     *cgroup2.Resources
	unified map[string]string
	need    []string
}

// toV2 converts OCI resources to cgroup v2 ones. cgroup2.ToResources does
// most of it; CPU and memory are done here because it writes "-1" (which
// the kernel refuses; v2 says "max"), drops a quota given without a period
// and gives a negative memory.swap.max for "unlimited" swap.
func toV2(r *specs.LinuxResources) (*v2Resources, error) {
	out := &v2Resources{res: &cgroup2.Resources{}}
	if r == nil {
		return out, nil
	}
	out.res = cgroup2.ToResources(r)
	out.res.CPU, out.res.Memory = nil, nil
	if c := r.CPU; c != nil {
		var need []string
		out.res.CPU, need = v2CPU(c)
		out.need = append(out.need, need...)
	}
	if mem := r.Memory; mem != nil {
		m, err := v2Memory(mem)
		if err != nil {
			return nil, err
		}
		if m != nil {
			out.res.Memory = m
			out.need = append(out.need, "memory")
		}
	}
	if out.res.Pids != nil {
		out.need = append(out.need, "pids")
	}
	if out.res.IO != nil {
		out.need = append(out.need, "io")
	}
	if out.res.RDMA != nil {
		out.need = append(out.need, "rdma")
	}
	if out.res.HugeTlb != nil && len(*out.res.HugeTlb) == 0 {
		out.res.HugeTlb = nil
	}
	out.res.Devices = v2Devices(r.Devices)
	if len(r.Unified) > 0 {
		out.unified = r.Unified
		for key := range r.Unified {
			ctrl, _, ok := strings.Cut(key, ".")
			if !ok || ctrl == "" || strings.ContainsAny(key, "/\x00") || key == "." || key == ".." {
				return nil, fmt.Errorf("%w: unified key %q: want a cgroup v2 file name such as memory.high", errdefs.ErrInvalidArgument, key)
			}
			if ctrl != "cgroup" {
				out.need = append(out.need, ctrl)
			}
		}
	}
	return out, nil
}

// v2CPU is the v2 form of CPU limits (a weight from shares, cpu.max from
// quota and period, the cpuset), nil if they set nothing, and the
// controllers it needs.
func v2CPU(c *specs.LinuxCPU) (*cgroup2.CPU, []string) {
	cpu := &cgroup2.CPU{Cpus: c.Cpus, Mems: c.Mems}
	if c.Shares != nil && *c.Shares != 0 {
		w := cgroup2.ConvertCPUSharesToCgroupV2Value(*c.Shares)
		cpu.Weight = &w
	}
	if c.Quota != nil || c.Period != nil {
		quota, period := "max", uint64(100000)
		if c.Quota != nil && *c.Quota > 0 {
			quota = strconv.FormatInt(*c.Quota, 10)
		}
		if c.Period != nil && *c.Period != 0 {
			period = *c.Period
		}
		cpu.Max = cgroup2.CPUMax(quota + " " + strconv.FormatUint(period, 10))
	}
	var need []string
	if cpu.Weight != nil || cpu.Max != "" {
		need = append(need, "cpu")
	}
	if cpu.Cpus != "" || cpu.Mems != "" {
		need = append(need, "cpuset")
	}
	if len(need) == 0 {
		return nil, nil
	}
	return cpu, need
}

// v2Memory is the v2 form of memory limits, nil if they set nothing.
func v2Memory(mem *specs.LinuxMemory) (*cgroup2.Memory, error) {
	m := &cgroup2.Memory{}
	// The kernel parses "max" or a byte count; a count above the
	// largest page counter is clamped to it, which reads back as "max".
	unlimited := int64(math.MaxInt64)
	var limit int64
	if mem.Limit != nil && *mem.Limit != 0 {
		limit = *mem.Limit
		if limit < 0 {
			limit = unlimited
		}
		m.Max = &limit
	}
	if mem.Swap != nil && *mem.Swap != 0 {
		// OCI/CRI swap is memory+swap (v1); v2 limits swap alone.
		var swap int64
		switch {
		case *mem.Swap < 0 || limit == unlimited:
			swap = unlimited
		case limit == 0:
			return nil, fmt.Errorf("%w: memory+swap limit %d without a memory limit", errdefs.ErrInvalidArgument, *mem.Swap)
		case *mem.Swap < limit:
			return nil, fmt.Errorf("%w: memory+swap limit %d is below the memory limit %d", errdefs.ErrInvalidArgument, *mem.Swap, limit)
		default:
			swap = *mem.Swap - limit
		}
		m.Swap = &swap
	}
	if mem.Reservation != nil && *mem.Reservation > 0 {
		low := *mem.Reservation
		m.Low = &low
	}
	if m.Max == nil && m.Swap == nil && m.Low == nil {
		return nil, nil
	}
	return m, nil
}

// v2Devices writes the rules out in full for cgroup2's eBPF device filter,
// which dereferences Major and Minor and takes no empty type, while the OCI
// spec (and husk's spec generation) leaves a wildcard's number nil and the
// type of an all-devices rule empty ("c 136:* rwm", "deny all"). cgroup v1
// reads both forms.
func v2Devices(rules []specs.LinuxDeviceCgroup) []specs.LinuxDeviceCgroup {
	if rules == nil {
		return nil
	}
	out := make([]specs.LinuxDeviceCgroup, 0, len(rules))
	for _, d := range rules {
		if d.Type == "" {
			d.Type = "a"
		}
		all := int64(-1)
		if d.Major == nil {
			d.Major = &all
		}
		if d.Minor == nil {
			d.Minor = &all
		}
		out = append(out, d)
	}
	return out
}
