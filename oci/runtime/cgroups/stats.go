package cgroups

import (
	"fmt"
	"math"
	"path/filepath"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
)

// Stats is what CRI's ContainerStats/PodSandboxStats and OOM detection need
// from a cgroup. Every number covers the cgroup and its descendants.
// Numbers for a controller that is not enabled for the cgroup are zero.
type Stats struct {
	// CPUUsageNanos is the CPU time used since the cgroup was made
	// (v1 cpuacct.usage, v2 cpu.stat usage_usec).
	CPUUsageNanos uint64
	// MemoryUsageBytes includes page cache (v1 memory.usage_in_bytes,
	// v2 memory.current).
	MemoryUsageBytes uint64
	// MemoryWorkingSetBytes is usage minus inactive file pages, as
	// kubelet/cAdvisor compute it: what kubelet evicts on.
	MemoryWorkingSetBytes uint64
	// MemoryRSSBytes is anonymous memory (v1 total_rss, v2 anon).
	MemoryRSSBytes uint64
	// MemoryLimitBytes is 0 when there is no limit.
	MemoryLimitBytes uint64
	// MemoryAvailableBytes is the limit minus the working set, 0 without
	// a limit (CRI's available_bytes).
	MemoryAvailableBytes uint64
	PageFaults           uint64
	MajorPageFaults      uint64
	// SwapUsageBytes is swap alone (v1 memsw usage minus memory usage).
	SwapUsageBytes uint64
	// Pids is the number of tasks (pids.current).
	Pids uint64
	// OOMKillCounted tells whether the kernel counts OOM kills for the
	// cgroup: v1 memory.oom_control has "oom_kill" only since Linux 4.13,
	// v2 memory.events only when the memory controller is enabled for it.
	OOMKillCounted bool
	// OOMKills is how many processes the OOM killer killed in the cgroup
	// because of its memory limit.
	OOMKills uint64

	// For the CRI's metrics (cAdvisor's container_* series).
	CPUUserNanos, CPUSystemNanos uint64
	// CFS bandwidth periods, those throttled, and the time throttled.
	CPUPeriods, CPUThrottledPeriods, CPUThrottledNanos uint64
	// MemoryCacheBytes is page cache, MemoryMappedFileBytes file pages
	// mapped, MemoryKernelBytes kernel memory (v2: stacks and slab).
	MemoryCacheBytes, MemoryMappedFileBytes, MemoryKernelBytes uint64
	// MemoryMaxUsageBytes is the peak usage; MemoryFailcnt how often the
	// limit was hit (v1 failcnt, v2 memory.events max).
	MemoryMaxUsageBytes, MemoryFailcnt uint64
	// PidsLimit is pids.max, 0 without a limit.
	PidsLimit uint64
	// Page cache on the active and inactive lists, dirty, and under
	// writeback.
	MemoryActiveFileBytes, MemoryInactiveFileBytes, MemoryDirtyBytes, MemoryWritebackBytes uint64
	// MemoryReservationBytes is the memory the cgroup is protected down
	// to (v1 memory.soft_limit_in_bytes, v2 memory.low); 0 for none.
	MemoryReservationBytes uint64
	// v2 only (zero on v1): pages scanned and reclaimed, refaults of
	// evicted anonymous and file pages, and how often usage went over
	// memory.high and memory.max (memory.events).
	MemoryPgscan, MemoryPgsteal, MemoryRefaultAnon, MemoryRefaultFile uint64
	MemoryHighEvents, MemoryMaxEvents                                 uint64

	// CPUPressure, MemoryPressure and IOPressure are the cgroup's pressure
	// stall information (KEP-4205): v2's *.pressure files, nil on v1 or
	// on a kernel without PSI.
	CPUPressure, MemoryPressure, IOPressure *Pressure
}

// Pressure is how long some or all of a cgroup's tasks waited for a
// resource, in total and as recent averages (percent).
type Pressure struct {
	Some, Full PressureData
}

// PressureData is one line of a *.pressure file.
type PressureData struct {
	TotalNanos           uint64
	Avg10, Avg60, Avg300 float64
}

// pressure converts cgroup2's PSI (total in microseconds, as the kernel
// writes it); nil stays nil.
func pressure(p *cgroup2stats.PSIStats) *Pressure {
	if p == nil {
		return nil
	}
	data := func(d *cgroup2stats.PSIData) PressureData {
		return PressureData{TotalNanos: d.GetTotal() * 1000, Avg10: d.GetAvg10(), Avg60: d.GetAvg60(), Avg300: d.GetAvg300()}
	}
	return &Pressure{Some: data(p.GetSome()), Full: data(p.GetFull())}
}

// Detail is how much of a cgroup a Stats call reads.
type Detail int

const (
	// Usage is what the CRI's stats calls report: CPU usage, the memory
	// usage, limit, working set, RSS, page faults and swap, the number of
	// tasks, and v2's pressure. Fields beyond those may be left zero.
	Usage Detail = iota
	// Full is every field, for the CRI's metrics.
	Full
)

// Stats reads the cgroup's usage, as much as d asks for. A missing cgroup
// is errdefs.ErrNotFound.
func (m *Manager) Stats(path string, d Detail) (*Stats, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	var (
		st           *Stats
		inactiveFile uint64
		err          error
	)
	if m.unified {
		if !m.Exists(path) {
			return nil, fmt.Errorf("%w: cgroup %s", errdefs.ErrNotFound, path)
		}
		st, inactiveFile, err = m.statsV2(path, d)
	} else {
		// No Exists first: the files tell, and one stat of a
		// directory per cgroup is worth saving at hundreds of pods.
		st, inactiveFile, err = m.statsV1(path, d)
	}
	if gone(err) && !m.Exists(path) {
		// Removed before or while it was read (systemd removes an ended
		// scope's).
		return nil, fmt.Errorf("%w: cgroup %s", errdefs.ErrNotFound, path)
	}
	if err != nil {
		return nil, fmt.Errorf("stats of cgroup %s: %w", path, err)
	}
	if st.MemoryUsageBytes > inactiveFile {
		st.MemoryWorkingSetBytes = st.MemoryUsageBytes - inactiveFile
	}
	if st.MemoryLimitBytes > st.MemoryWorkingSetBytes {
		st.MemoryAvailableBytes = st.MemoryLimitBytes - st.MemoryWorkingSetBytes
	}
	return st, nil
}

// v1NoLimit: v1 reports "no limit" as the largest page counter in bytes
// (9223372036854771712 with 4k pages), anything this large is no limit.
const v1NoLimit = 1 << 62

func (m *Manager) statsV2(path string, d Detail) (st *Stats, inactiveFile uint64, err error) {
	cg, err := m.loadV2(path)
	if err != nil {
		return nil, 0, err
	}
	what := cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatPids | cgroup2.StatIO
	if d == Full {
		what |= cgroup2.StatMemoryEvents
	}
	mt, err := cg.StatFiltered(what)
	if err != nil {
		return nil, 0, err
	}
	st = &Stats{}
	cpu := mt.GetCPU()
	st.CPUUsageNanos = cpu.GetUsageUsec() * 1000
	st.CPUUserNanos, st.CPUSystemNanos = cpu.GetUserUsec()*1000, cpu.GetSystemUsec()*1000
	st.CPUPeriods, st.CPUThrottledPeriods, st.CPUThrottledNanos = cpu.GetNrPeriods(), cpu.GetNrThrottled(), cpu.GetThrottledUsec()*1000
	st.CPUPressure, st.MemoryPressure, st.IOPressure = pressure(cpu.GetPSI()), pressure(mt.GetMemory().GetPSI()), pressure(mt.GetIo().GetPSI())
	if p := mt.GetPids(); p != nil {
		st.Pids = p.Current
		if p.Limit != math.MaxUint64 {
			st.PidsLimit = p.Limit
		}
	}
	if mem := mt.GetMemory(); mem != nil {
		st.MemoryUsageBytes = mem.Usage
		if mem.UsageLimit != math.MaxUint64 {
			st.MemoryLimitBytes = mem.UsageLimit
		}
		inactiveFile = mem.InactiveFile
		st.MemoryRSSBytes = mem.Anon
		st.PageFaults = mem.Pgfault
		st.MajorPageFaults = mem.Pgmajfault
		st.SwapUsageBytes = mem.SwapUsage
		st.MemoryCacheBytes, st.MemoryMappedFileBytes = mem.File, mem.FileMapped
		st.MemoryKernelBytes = mem.KernelStack + mem.Slab
		st.MemoryMaxUsageBytes = mem.MaxUsage
		st.MemoryActiveFileBytes, st.MemoryInactiveFileBytes = mem.ActiveFile, mem.InactiveFile
		st.MemoryDirtyBytes, st.MemoryWritebackBytes = mem.FileDirty, mem.FileWriteback
		st.MemoryPgscan, st.MemoryPgsteal = mem.Pgscan, mem.Pgsteal
		if d == Usage {
			// memory.events is not read either.
			return st, inactiveFile, nil
		}
		// Split in two since Linux 5.9; the cgroup2 package reads only
		// the old single counter.
		dir := filepath.Join(m.mountpoint, path)
		r := &fileReader{}
		r.keys(filepath.Join(dir, "memory.stat"),
			keyed{"workingset_refault_anon", &st.MemoryRefaultAnon}, keyed{"workingset_refault_file", &st.MemoryRefaultFile})
		st.MemoryReservationBytes = r.limit(filepath.Join(dir, "memory.low"))
		if r.err != nil {
			return nil, 0, r.err
		}
	}
	if ev := mt.GetMemoryEvents(); ev != nil {
		st.OOMKillCounted = true
		st.OOMKills = ev.OomKill
		st.MemoryFailcnt = ev.Max
		st.MemoryHighEvents, st.MemoryMaxEvents = ev.High, ev.Max
	}
	return st, inactiveFile, nil
}

// OOMEventsFile is the file of a cgroup that counts the processes the
// kernel killed in it for memory ("oom_kill N"): memory.events on v2,
// memory.oom_control on v1. The container monitor reads it when the
// container ends. Empty when the host has no memory controller.
func (m *Manager) OOMEventsFile(path string) string {
	if checkPath(path) != nil {
		return ""
	}
	if m.unified {
		return filepath.Join(m.mountpoint, path, "memory.events")
	}
	root := m.v1Root(cgroup1.Memory)
	if root == "" {
		return ""
	}
	return filepath.Join(root, path, "memory.oom_control")
}
