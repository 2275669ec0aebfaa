package cgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// busyThenSleep burns a little CPU (so that the cgroup's CPU accounting
// moves) and then becomes `sleep 60` (whose exec charges fresh memory).
const busyThenSleep = `i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; exec sleep 60`

func TestV1Lifecycle(t *testing.T) {
	m := v1Manager(t, Cgroupfs)
	top := "/" + uniqueName(t)
	cleanupCgroup(t, m, top)
	pod, err := m.PodPath(top, "pod1")
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := m.ContainerPath(pod, "ctr1")
	if err != nil {
		t.Fatal(err)
	}

	if err := m.Create(pod, nil); err != nil {
		t.Fatal(err)
	}
	res := &specs.LinuxResources{
		CPU: &specs.LinuxCPU{
			Shares: ptr(uint64(512)),
			Quota:  ptr(int64(50000)),
			Period: ptr(uint64(100000)),
			Cpus:   "0",
			Mems:   "0",
		},
		Memory: &specs.LinuxMemory{Limit: ptr(int64(64 << 20)), Swap: ptr(int64(64 << 20))},
		Pids:   &specs.LinuxPids{Limit: ptr(int64(100))},
	}
	if err := m.Create(ctr, res); err != nil {
		t.Fatal(err)
	}
	// in every hierarchy
	for _, r := range m.v1Roots {
		if fi, err := os.Stat(filepath.Join(r.dir, ctr)); err != nil || !fi.IsDir() {
			t.Errorf("%s not made in the %s hierarchy: %v", ctr, r.name, err)
		}
	}
	file := func(ctrl cgroup1.Name, name string) string {
		t.Helper()
		root := m.v1Root(ctrl)
		if root == "" {
			t.Fatalf("controller %s not mounted", ctrl)
		}
		return readTrim(t, filepath.Join(root, ctr, name))
	}
	swapAccounted := true
	if _, err := os.Stat(filepath.Join(m.v1Root(cgroup1.Memory), "memory.memsw.limit_in_bytes")); err != nil {
		swapAccounted = false // then the swap limit is dropped
	}
	check := func(ctrl cgroup1.Name, name, want string) {
		t.Helper()
		if name == "memory.memsw.limit_in_bytes" && !swapAccounted {
			return
		}
		if got := file(ctrl, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	check(cgroup1.Memory, "memory.limit_in_bytes", "67108864")
	check(cgroup1.Memory, "memory.memsw.limit_in_bytes", "67108864")
	check(cgroup1.Cpu, "cpu.shares", "512")
	check(cgroup1.Cpu, "cpu.cfs_quota_us", "50000")
	check(cgroup1.Cpu, "cpu.cfs_period_us", "100000")
	check(cgroup1.Cpuset, "cpuset.cpus", "0")
	check(cgroup1.Cpuset, "cpuset.mems", "0")
	check(cgroup1.Pids, "pids.max", "100")

	// Create again is fine, and raising memory and memory+swap together
	// needs memory+swap written first (the kernel keeps memsw >= memory).
	res.Memory = &specs.LinuxMemory{Limit: ptr(int64(128 << 20)), Swap: ptr(int64(128 << 20))}
	if err := m.Create(ctr, res); err != nil {
		t.Fatal(err)
	}
	check(cgroup1.Memory, "memory.limit_in_bytes", "134217728")
	check(cgroup1.Memory, "memory.memsw.limit_in_bytes", "134217728")
	// Unlimited swap while lowering the limit, then raising both again.
	if err := m.Update(ctr, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(32 << 20)), Swap: ptr(int64(-1))}}); err != nil {
		t.Fatal(err)
	}
	check(cgroup1.Memory, "memory.limit_in_bytes", "33554432")
	check(cgroup1.Memory, "memory.memsw.limit_in_bytes", "9223372036854771712")
	if err := m.Update(ctr, &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: ptr(int64(256 << 20)), Swap: ptr(int64(256 << 20))},
		CPU:    &specs.LinuxCPU{Shares: ptr(uint64(256)), Quota: ptr(int64(-1))},
	}); err != nil {
		t.Fatal(err)
	}
	check(cgroup1.Memory, "memory.limit_in_bytes", "268435456")
	check(cgroup1.Memory, "memory.memsw.limit_in_bytes", "268435456")
	check(cgroup1.Cpu, "cpu.shares", "256")
	check(cgroup1.Cpu, "cpu.cfs_quota_us", "-1")
	if err := m.Update(ctr, &specs.LinuxResources{Unified: map[string]string{"memory.high": "1"}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unified resources on v1: %v, want invalid argument", err)
	}

	// A real process, moved in before it runs.
	p := startGated(t, busyThenSleep)
	if err := m.AddProcess(ctr, p.pid()); err != nil {
		t.Fatal(err)
	}
	for h, path := range procCgroups(t, p.pid()) {
		if h != "" && path != ctr {
			t.Errorf("process is in %s:%s, want %s", h, path, ctr)
		}
	}
	p.release(t)
	for _, path := range []string{ctr, pod, top} {
		pids, err := m.Pids(path)
		if err != nil || !slices.Equal(pids, []int{p.pid()}) {
			t.Errorf("Pids(%s) = %v, %v; want [%d]", path, pids, err, p.pid())
		}
		if members, err := m.Members(path); err != nil || !slices.Equal(members, []int{p.pid()}) {
			t.Errorf("Members(%s) = %v, %v; want [%d]", path, members, err, p.pid())
		}
	}
	if members, err := m.Members(ctr + "-never-made"); err != nil || len(members) != 0 {
		t.Errorf("Members of a cgroup never made = %v, %v; want none", members, err)
	}
	var st *Stats
	eventually(t, 10*time.Second, func() string {
		st, err = m.Stats(ctr, Full)
		if err != nil {
			t.Fatal(err)
		}
		if st.CPUUsageNanos == 0 || st.MemoryUsageBytes == 0 {
			return fmt.Sprintf("no CPU or memory use seen: %+v", st)
		}
		return ""
	})
	if st.MemoryLimitBytes != 256<<20 || st.MemoryWorkingSetBytes > st.MemoryUsageBytes ||
		st.MemoryAvailableBytes != st.MemoryLimitBytes-st.MemoryWorkingSetBytes || st.Pids != 1 || st.OOMKills != 0 {
		t.Errorf("stats: %+v", st)
	}
	if !st.OOMKillCounted {
		t.Logf("this kernel does not count OOM kills in memory.oom_control: %+v", st)
	}
	if podSt, err := m.Stats(pod, Full); err != nil || podSt.MemoryLimitBytes != 0 || podSt.CPUUsageNanos < st.CPUUsageNanos {
		t.Errorf("pod stats (hierarchical, no limit): %+v, %v", podSt, err)
	}
	t.Logf("container stats: %+v", st)

	// Delete kills nothing: refused while a process is in the tree.
	for _, path := range []string{ctr, pod} {
		if err := m.Delete(path); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), fmt.Sprint(p.pid())) {
			t.Errorf("Delete(%s) with a process inside = %v, want failed precondition naming pid %d", path, err, p.pid())
		}
	}
	for _, r := range m.v1Roots {
		if _, err := os.Stat(filepath.Join(r.dir, ctr)); err != nil {
			t.Errorf("refused Delete removed %s from the %s hierarchy", ctr, r.name)
		}
	}
	p.kill()
	// Deleting the pod removes the container cgroup below it too.
	eventually(t, 5*time.Second, func() string {
		if err := m.Delete(pod); err != nil {
			return err.Error()
		}
		return ""
	})
	for _, r := range m.v1Roots {
		if _, err := os.Stat(filepath.Join(r.dir, pod)); !os.IsNotExist(err) {
			t.Errorf("%s left in the %s hierarchy: %v", pod, r.name, err)
		}
	}
	if m.Exists(ctr) || m.Exists(pod) || !m.Exists(top) {
		t.Errorf("after Delete(pod): exists ctr %v pod %v top %v", m.Exists(ctr), m.Exists(pod), m.Exists(top))
	}
	// Gone already: Delete succeeds, the rest report not found.
	if err := m.Delete(pod); err != nil {
		t.Errorf("Delete of a deleted cgroup: %v", err)
	}
	if err := m.Delete(top + "/never-made"); err != nil {
		t.Errorf("Delete of a missing cgroup: %v", err)
	}
	if err := m.Update(ctr, res); !errdefs.IsNotFound(err) {
		t.Errorf("Update of a missing cgroup: %v", err)
	}
	if err := m.AddProcess(ctr, os.Getpid()); !errdefs.IsNotFound(err) {
		t.Errorf("AddProcess to a missing cgroup: %v", err)
	}
	if _, err := m.Pids(ctr); !errdefs.IsNotFound(err) {
		t.Errorf("Pids of a missing cgroup: %v", err)
	}
	if _, err := m.Stats(ctr, Full); !errdefs.IsNotFound(err) {
		t.Errorf("Stats of a missing cgroup: %v", err)
	}
}

// TestV1CreateUndo: a Create that fails removes what it made (here the
// whole new tree from its top), and leaves a cgroup that existed before.
func TestV1CreateUndo(t *testing.T) {
	m := v1Manager(t, Cgroupfs)
	top := "/" + uniqueName(t)
	cleanupCgroup(t, m, top)
	bad := &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "4095"}} // no such CPU: EINVAL
	if err := m.Create(top+"/pod/ctr", bad); err == nil {
		t.Fatal("Create with cpuset.cpus 4095 succeeded")
	}
	for _, r := range m.v1Roots {
		if _, err := os.Stat(filepath.Join(r.dir, top)); !os.IsNotExist(err) {
			t.Errorf("failed Create left %s in the %s hierarchy: %v", top, r.name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(m.v1Root(cgroup1.Memory), "memory.memsw.limit_in_bytes")); err == nil {
		// memory+swap below memory: the kernel refuses it
		swapBelow := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(64 << 20)), Swap: ptr(int64(32 << 20))}}
		if err := m.Create(top+"/pod", swapBelow); err == nil {
			t.Error("Create with memory+swap below memory succeeded")
		}
		if m.Exists(top) {
			t.Errorf("failed Create left %s", top)
		}
	}
	if err := m.Create(top+"/pod", nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Create(top+"/pod", bad); err == nil {
		t.Fatal("Create with cpuset.cpus 4095 succeeded")
	}
	if !m.Exists(top + "/pod") {
		t.Error("failed Create of an existing cgroup removed it")
	}
}

// TestV1OOMKill: a process over the memory limit is OOM-killed and Stats
// counts it (memory.oom_control's oom_kill, Linux 4.13 and later).
func TestV1OOMKill(t *testing.T) {
	m := v1Manager(t, Cgroupfs)
	top := "/" + uniqueName(t)
	cleanupCgroup(t, m, top)
	limit := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(16 << 20)), Swap: ptr(int64(16 << 20))}}
	if err := m.Create(top, limit); err != nil {
		t.Fatal(err)
	}
	st, err := m.Stats(top, Full)
	if err != nil {
		t.Fatal(err)
	}
	if !st.OOMKillCounted {
		t.Skip("this kernel does not count OOM kills in memory.oom_control (before Linux 4.13)")
	}
	// tail keeps all of a newline-free input in memory
	p := startGated(t, "head -c 268435456 /dev/zero | tail")
	if err := m.AddProcess(top, p.pid()); err != nil {
		t.Fatal(err)
	}
	p.release(t)
	p.wait(t, 30*time.Second)
	if st, err = m.Stats(top, Full); err != nil || st.OOMKills == 0 {
		t.Errorf("after exceeding the limit: %+v, %v; want OOM kills", st, err)
	}
}
