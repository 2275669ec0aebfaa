package cgroups

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/cgroups/v3/cgroup1"
)

// userHZ is the unit of cpuacct.stat: the kernel reports it in USER_HZ
// ticks, 100 a second on every architecture Linux exports to userspace.
const userHZ = 100

// statsV1 reads path's v1 files; none found means the cgroup is in none
// of the hierarchies read, and gone says so. It reads them itself
// (fileReader), not through cgroup1.Stat: that opens about 18 files a
// cgroup, starts a goroutine per controller, and reads values husk does
// not report. At 250 pods, the stats calls spent most of their time there.
func (m *Manager) statsV1(path string, d Detail) (st *Stats, inactiveFile uint64, err error) {
	r := &fileReader{}
	st = &Stats{}
	if root := m.v1Root(cgroup1.Memory); root != "" {
		inactiveFile = r.memory(filepath.Join(root, path), st, d)
	}
	if root := m.v1Root(cgroup1.Cpuacct); root != "" {
		dir := filepath.Join(root, path)
		st.CPUUsageNanos = r.value(filepath.Join(dir, "cpuacct.usage"))
		if d == Full {
			var user, system uint64
			r.keys(filepath.Join(dir, "cpuacct.stat"), keyed{"user", &user}, keyed{"system", &system})
			st.CPUUserNanos, st.CPUSystemNanos = user*(1e9/userHZ), system*(1e9/userHZ)
		}
	}
	if root := m.v1Root(cgroup1.Cpu); root != "" && d == Full {
		r.keys(filepath.Join(root, path, "cpu.stat"),
			keyed{"nr_periods", &st.CPUPeriods}, keyed{"nr_throttled", &st.CPUThrottledPeriods}, keyed{"throttled_time", &st.CPUThrottledNanos})
	}
	if root := m.v1Root(cgroup1.Pids); root != "" {
		dir := filepath.Join(root, path)
		st.Pids = r.value(filepath.Join(dir, "pids.current"))
		if d == Full {
			st.PidsLimit = r.limit(filepath.Join(dir, "pids.max"))
		}
	}
	switch {
	case r.err != nil:
		return nil, 0, r.err
	case r.found == 0:
		return st, 0, fmt.Errorf("cgroup %s: %w", path, os.ErrNotExist)
	}
	return st, inactiveFile, nil
}

// memory reads the memory controller's values into st and returns the
// inactive file pages (what the working set leaves out).
func (r *fileReader) memory(dir string, st *Stats, d Detail) (inactiveFile uint64) {
	file := func(name string) string { return filepath.Join(dir, name) }
	st.MemoryUsageBytes = r.value(file("memory.usage_in_bytes"))
	st.MemoryLimitBytes = r.limit(file("memory.limit_in_bytes"))
	// memsw is there only when swap is accounted.
	if sw := r.value(file("memory.memsw.usage_in_bytes")); sw > st.MemoryUsageBytes {
		st.SwapUsageBytes = sw - st.MemoryUsageBytes
	}
	// The hierarchical totals: a pod's cgroup holds its containers'.
	r.keys(file("memory.stat"),
		keyed{"total_inactive_file", &inactiveFile},
		keyed{"total_rss", &st.MemoryRSSBytes},
		keyed{"total_cache", &st.MemoryCacheBytes},
		keyed{"total_mapped_file", &st.MemoryMappedFileBytes},
		keyed{"total_pgfault", &st.PageFaults},
		keyed{"total_pgmajfault", &st.MajorPageFaults},
		keyed{"total_active_file", &st.MemoryActiveFileBytes},
		keyed{"total_dirty", &st.MemoryDirtyBytes},
		keyed{"total_writeback", &st.MemoryWritebackBytes},
	)
	st.MemoryInactiveFileBytes = inactiveFile
	if d == Usage {
		return inactiveFile
	}
	st.MemoryMaxUsageBytes = r.value(file("memory.max_usage_in_bytes"))
	st.MemoryFailcnt = r.value(file("memory.failcnt"))
	st.MemoryReservationBytes = r.limit(file("memory.soft_limit_in_bytes"))
	st.MemoryKernelBytes = r.value(file("memory.kmem.usage_in_bytes"))
	// "oom_kill" is counted since Linux 4.13; its absence is not a zero.
	st.OOMKillCounted = r.keys(file("memory.oom_control"), keyed{"oom_kill", &st.OOMKills}) == 1
	return inactiveFile
}
