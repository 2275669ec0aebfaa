package cgroups

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadKeyAndLimit(t *testing.T) {
	dir := t.TempDir()
	stat := filepath.Join(dir, "memory.stat")
	if err := os.WriteFile(stat, []byte("anon 4096\nworkingset_refault_anon 7\nworkingset_refault_file 12\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var refaultAnon, refaultFile, refault, anon, file uint64
	r := &fileReader{}
	found := r.keys(stat, keyed{"workingset_refault_anon", &refaultAnon}, keyed{"workingset_refault_file", &refaultFile}, keyed{"workingset_refault", &refault})
	if r.err != nil || found != 2 || refaultAnon != 7 || refaultFile != 12 {
		t.Errorf("keys = %d found: %d %d %d, %v", found, refaultAnon, refaultFile, refault, r.err)
	}
	if found := r.keys(stat, keyed{"anon", &anon}); found != 1 || r.err != nil {
		t.Errorf("keys(anon) found %d, %v", found, r.err)
	}
	if found := r.keys(stat, keyed{"file", &file}); found != 0 || r.err != nil {
		t.Errorf("keys(file) found %d, %v", found, r.err)
	}
	if found := r.keys(filepath.Join(dir, "missing"), keyed{"anon", &anon}); found != 0 || r.err != nil {
		t.Errorf("keys of a missing file: found %d, %v", found, r.err)
	}
	bad := filepath.Join(dir, "bad")
	_ = os.WriteFile(bad, []byte("anon lots\nfile 1\n"), 0o600)
	if r.keys(bad, keyed{"anon", &anon}); r.err == nil {
		t.Error("keys of a value that is not a number: no error")
	}
	r = &fileReader{}
	if r.keys(bad, keyed{"file", &file}); r.err != nil || file != 1 {
		t.Errorf("keys past a line not asked for that is not a number: %d, %v", file, r.err)
	}

	for content, want := range map[string]uint64{
		"max\n":                 0, // v2: no limit
		"9223372036854771712\n": 0, // v1: no limit
		"67108864\n":            64 << 20,
	} {
		f := filepath.Join(dir, "limit")
		_ = os.WriteFile(f, []byte(content), 0o600)
		if got := r.limit(f); r.err != nil || got != want {
			t.Errorf("limit(%q) = %d, %v; want %d", content, got, r.err, want)
		}
	}
	if got := r.limit(filepath.Join(dir, "missing")); got != 0 || r.err != nil {
		t.Errorf("limit of a missing file = %d, %v", got, r.err)
	}
}

// TestV1Reader reads a v1 memory controller's files as the kernel writes
// them: the hierarchical totals of memory.stat, the page-counter maximum
// as no limit, memsw only when swap is accounted.
func TestV1Reader(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("memory.usage_in_bytes", "1000000\n")
	write("memory.limit_in_bytes", "9223372036854771712\n")
	write("memory.soft_limit_in_bytes", "524288\n")
	write("memory.max_usage_in_bytes", "2000000\n")
	write("memory.failcnt", "3\n")
	write("memory.stat", "cache 1\nrss 2\ninactive_file 4\ntotal_cache 4096\ntotal_rss 8192\ntotal_mapped_file 12\n"+
		"total_pgfault 100\ntotal_pgmajfault 7\ntotal_inactive_file 300000\ntotal_active_file 5\ntotal_dirty 6\ntotal_writeback 8\n")
	write("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
	r := &fileReader{}
	st := &Stats{}
	inactive := r.memory(dir, st, Full)
	want := Stats{MemoryUsageBytes: 1000000, MemoryReservationBytes: 524288, MemoryMaxUsageBytes: 2000000, MemoryFailcnt: 3,
		MemoryCacheBytes: 4096, MemoryRSSBytes: 8192, MemoryMappedFileBytes: 12, PageFaults: 100, MajorPageFaults: 7,
		MemoryInactiveFileBytes: 300000, MemoryActiveFileBytes: 5, MemoryDirtyBytes: 6, MemoryWritebackBytes: 8,
		OOMKillCounted: true, OOMKills: 2}
	if r.err != nil || inactive != 300000 || *st != want {
		t.Errorf("memory = %+v, inactive %d, %v\nwant %+v", *st, inactive, r.err, want)
	}

	// Usage reads what the CRI's stats report and leaves the rest.
	st = &Stats{}
	r.memory(dir, st, Usage)
	want = Stats{MemoryUsageBytes: 1000000, MemoryCacheBytes: 4096, MemoryRSSBytes: 8192, MemoryMappedFileBytes: 12, PageFaults: 100,
		MajorPageFaults: 7, MemoryInactiveFileBytes: 300000, MemoryActiveFileBytes: 5, MemoryDirtyBytes: 6, MemoryWritebackBytes: 8}
	if r.err != nil || *st != want {
		t.Errorf("memory, usage only = %+v, %v\nwant %+v", *st, r.err, want)
	}

	// Swap accounted, a kernel before oom_kill was counted.
	write("memory.memsw.usage_in_bytes", "1500000\n")
	write("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n")
	st = &Stats{}
	r.memory(dir, st, Full)
	if r.err != nil || st.SwapUsageBytes != 500000 || st.OOMKillCounted {
		t.Errorf("with memsw, without oom_kill: %+v, %v", *st, r.err)
	}

	// A value that is not a number is an error, and so is a file too
	// large for one read.
	write("memory.failcnt", "lots\n")
	r = &fileReader{}
	if r.memory(dir, &Stats{}, Full); r.err == nil || !strings.Contains(r.err.Error(), "memory.failcnt") {
		t.Errorf("bad failcnt: %v", r.err)
	}
	write("memory.failcnt", "3\n")
	write("memory.stat", strings.Repeat("total_rss 1\n", 1000))
	r = &fileReader{}
	if r.memory(dir, &Stats{}, Full); r.err == nil {
		t.Error("a memory.stat larger than the buffer: no error")
	}
}
