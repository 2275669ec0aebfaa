package validate

import (
	"os"
	"strconv"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The kernel's ranges for the CFS and cgroup values (kernel/sched/core.c,
// cgroup v1's cpu.shares).
const (
	minCPUPeriod = 1000    // 1 ms
	maxCPUPeriod = 1000000 // 1 s
	minCPUQuota  = 1000
	minCPUShares = 2
	maxCPUShares = 262144
)

// Resources checks a container's resources: values the kernel takes, CPUs
// and memory nodes this machine has. field names the message
// ("config.linux.resources"); nil is fine.
func Resources(field string, r *runtimeapi.LinuxContainerResources) error {
	return resources(field, r, false)
}

// PodResources checks a pod's resources and overhead as Resources does, but
// takes any cpu_quota: kubelet sends a pod's quota less its overhead's,
// which can be below the kernel's 1000, 0 or negative (no CFS quota). husk
// writes a pod's limits only for a pod without a cgroup_parent, and a quota
// the kernel then refuses is still InvalidArgument.
func PodResources(field string, r *runtimeapi.LinuxContainerResources) error {
	return resources(field, r, true)
}

func resources(field string, r *runtimeapi.LinuxContainerResources, pod bool) error {
	if r == nil {
		return nil
	}
	f := field + "."
	if v := r.GetCpuPeriod(); v != 0 && (v < minCPUPeriod || v > maxCPUPeriod) {
		return invalid(f+"cpu_period", "%d: want %d to %d microseconds, or 0 for the default", v, minCPUPeriod, maxCPUPeriod)
	}
	if v := r.GetCpuQuota(); !pod && v != 0 && v != -1 && v < minCPUQuota {
		return invalid(f+"cpu_quota", "%d: want at least %d microseconds, or -1 for none", v, minCPUQuota)
	}
	if v := r.GetCpuShares(); v != 0 && (v < minCPUShares || v > maxCPUShares) {
		return invalid(f+"cpu_shares", "%d: want %d to %d", v, minCPUShares, maxCPUShares)
	}
	if v := r.GetMemoryLimitInBytes(); v < 0 {
		return invalid(f+"memory_limit_in_bytes", "%d is negative", v)
	}
	// -1 is OCI's "unlimited", which kubelets of UnlimitedSwap sent.
	if v := r.GetMemorySwapLimitInBytes(); v < -1 {
		return invalid(f+"memory_swap_limit_in_bytes", "%d: want -1 (unlimited), 0 (unset) or a size", v)
	}
	if v := r.GetOomScoreAdj(); v < -1000 || v > 1000 {
		return invalid(f+"oom_score_adj", "%d: want -1000 to 1000", v)
	}
	if err := cpuList(f+"cpuset_cpus", r.GetCpusetCpus(), "/sys/devices/system/cpu/online"); err != nil {
		return err
	}
	if err := cpuList(f+"cpuset_mems", r.GetCpusetMems(), "/sys/devices/system/node/online"); err != nil {
		return err
	}
	for i, h := range r.GetHugepageLimits() {
		if !pageSize(h.GetPageSize()) {
			return invalid(fieldIndex(f+"hugepage_limits", i)+".page_size", "%q: want a size such as 2MB or 1GB", clip(h.GetPageSize()))
		}
	}
	for k, v := range r.GetUnified() {
		if err := printable(f+"unified["+clip(k)+"]", k+v); err != nil {
			return err
		}
	}
	return nil
}

// maxListLength bounds a cpuset list: "0-3,8" on the largest machine is
// short, and each range is checked without being expanded.
const maxListLength = 4096

// cpuList checks a cpuset list ("0-3,8") against the ids online lists
// (the same form); a machine without the file (no NUMA nodes shown) has
// id 0.
func cpuList(field, v, online string) error {
	if v == "" {
		return nil
	}
	if len(v) > maxListLength {
		return invalid(field, "%d bytes, at most %d", len(v), maxListLength)
	}
	ranges, ok := parseList(v)
	if !ok {
		return invalid(field, "%q: want a list such as 0-3,8", clip(v))
	}
	have := [][2]int{{0, 0}}
	if b, err := os.ReadFile(online); err == nil {
		if on, ok := parseList(strings.TrimSpace(string(b))); ok {
			have = on
		}
	}
	for _, r := range ranges {
		if !covered(r, have) {
			return invalid(field, "%d-%d is not online on this machine (%s)", r[0], r[1], online)
		}
	}
	return nil
}

// covered reports whether every id of r is in one of have's ranges (the
// kernel's lists are merged ranges: no id is in two).
func covered(r [2]int, have [][2]int) bool {
	for _, h := range have {
		if r[0] >= h[0] && r[1] <= h[1] {
			return true
		}
	}
	return false
}

// parseList parses the kernel's list format into its ranges, refusing ids
// past 1<<16 (no machine has as many CPUs).
func parseList(v string) ([][2]int, bool) {
	var out [][2]int
	for _, part := range strings.Split(v, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 || a > 1<<16 {
			return nil, false
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a || b > 1<<16 {
				return nil, false
			}
		}
		out = append(out, [2]int{a, b})
	}
	return out, true
}

// pageSize: a number and a unit, as kubelet sends ("2MB", "1GB", "64KB").
func pageSize(v string) bool {
	num := strings.TrimRight(v, "KMGB")
	unit := v[len(num):]
	n, err := strconv.Atoi(num)
	return err == nil && n > 0 && (unit == "KB" || unit == "MB" || unit == "GB" || unit == "B")
}
