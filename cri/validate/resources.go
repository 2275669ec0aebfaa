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

// Resources checks container (or pod) resources: values the kernel takes,
// CPUs and memory nodes this machine has. field names the message
// ("config.linux.resources"); nil is fine.
func Resources(field string, r *runtimeapi.LinuxContainerResources) error {
	if r == nil {
		return nil
	}
	f := field + "."
	if v := r.GetCpuPeriod(); v != 0 && (v < minCPUPeriod || v > maxCPUPeriod) {
		return invalid(f+"cpu_period", "%d: want %d to %d microseconds, or 0 for the default", v, minCPUPeriod, maxCPUPeriod)
	}
	if v := r.GetCpuQuota(); v != 0 && v != -1 && v < minCPUQuota {
		return invalid(f+"cpu_quota", "%d: want at least %d microseconds, or -1 for none", v, minCPUQuota)
	}
	if v := r.GetCpuShares(); v != 0 && (v < minCPUShares || v > maxCPUShares) {
		return invalid(f+"cpu_shares", "%d: want %d to %d", v, minCPUShares, maxCPUShares)
	}
	if v := r.GetMemoryLimitInBytes(); v < 0 {
		return invalid(f+"memory_limit_in_bytes", "%d is negative", v)
	}
	if v := r.GetMemorySwapLimitInBytes(); v < 0 {
		return invalid(f+"memory_swap_limit_in_bytes", "%d is negative", v)
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

// cpuList checks a cpuset list ("0-3,8") against the ids online lists
// (the same form); a machine without the file (no NUMA nodes shown) has
// id 0.
func cpuList(field, v, online string) error {
	if v == "" {
		return nil
	}
	ids, ok := parseList(v)
	if !ok {
		return invalid(field, "%q: want a list such as 0-3,8", clip(v))
	}
	have := map[int]bool{0: true}
	if b, err := os.ReadFile(online); err == nil {
		if on, ok := parseList(strings.TrimSpace(string(b))); ok {
			have = map[int]bool{}
			for _, id := range on {
				have[id] = true
			}
		}
	}
	for _, id := range ids {
		if !have[id] {
			return invalid(field, "%d is not online on this machine (%s)", id, online)
		}
	}
	return nil
}

// parseList parses the kernel's list format, refusing ranges past 1<<16
// (no machine has as many CPUs; it bounds the work).
func parseList(v string) ([]int, bool) {
	var out []int
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
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
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
