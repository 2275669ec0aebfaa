package cgroups

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/cgroups/v3/cgroup1"
	"golang.org/x/sys/unix"
)

// userHZ is the unit of cpuacct.stat: the kernel reports it in USER_HZ
// ticks, 100 a second on every architecture Linux exports to userspace.
const userHZ = 100

// v1Reader reads a v1 cgroup's files for statsV1. It does not use
// cgroup1.Stat: that opens about 18 files a cgroup through os.Open, which
// registers each with the poller (cgroupfs files can be polled), starts a
// goroutine per controller, and reads values husk does not report. At 250
// pods, the stats calls spent most of their time there. The first error
// other than a missing file is kept; a missing file leaves its values zero
// (a controller not mounted, a kernel without the file).
type v1Reader struct {
	buf [4096]byte
	err error
	// found counts the files that were there.
	found int
}

// read returns the content of a cgroupfs file, or nil when it is missing
// or an error was met.
func (r *v1Reader) read(file string) []byte {
	if r.err != nil {
		return nil
	}
	fd, err := unix.Open(file, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if gone(err) {
		return nil
	}
	if err != nil {
		r.err = fmt.Errorf("open %s: %w", file, err)
		return nil
	}
	defer func() { _ = unix.Close(fd) }()
	r.found++
	n := 0
	for {
		k, err := unix.Read(fd, r.buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			r.err = fmt.Errorf("read %s: %w", file, err)
			return nil
		}
		n += k
		// A cgroupfs file is a seq_file: one read returns all of it
		// that fits, so a short read is its end.
		if k == 0 || n < len(r.buf) {
			return r.buf[:n]
		}
		r.err = fmt.Errorf("read %s: larger than %d bytes", file, len(r.buf))
		return nil
	}
}

// value reads a single-number file; "max" (pids.max) is 0, no limit.
func (r *v1Reader) value(file string) uint64 {
	b := bytes.TrimSpace(r.read(file))
	if len(b) == 0 || string(b) == "max" {
		return 0
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("%s: %w", file, err)
	}
	return n
}

// limit reads a limit file; v1's page-counter maximum is no limit, 0.
func (r *v1Reader) limit(file string) uint64 {
	if n := r.value(file); n < v1NoLimit {
		return n
	}
	return 0
}

// keyed is one wanted line of a flat keyed file and where its value goes.
type keyed struct {
	key string
	dst *uint64
}

// keys reads the wanted values of a flat keyed file ("key value" lines)
// and reports whether the file has each of them.
func (r *v1Reader) keys(file string, want ...keyed) (found int) {
	b := r.read(file)
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		k, v, _ := bytes.Cut(line, []byte{' '})
		for _, w := range want {
			if string(k) != w.key {
				continue
			}
			n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				if r.err == nil {
					r.err = fmt.Errorf("%s: %s: %w", file, k, err)
				}
				return found
			}
			*w.dst = n
			found++
		}
	}
	return found
}

// statsV1 reads path's v1 files; none found means the cgroup is in none
// of the hierarchies read, and gone says so.
func (m *Manager) statsV1(path string, d Detail) (st *Stats, inactiveFile uint64, err error) {
	r := &v1Reader{}
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
func (r *v1Reader) memory(dir string, st *Stats, d Detail) (inactiveFile uint64) {
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
