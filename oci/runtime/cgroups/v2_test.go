package cgroups

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The v2 tests run the v2 code against the host's cgroup2 hierarchy. On a
// hybrid host (this project's test machine) that is /sys/fs/cgroup/unified,
// which offers no cpu, memory, io or pids controller (they are bound to v1
// hierarchies): there these tests check making, filling, listing and
// deleting cgroups, the hugetlb controller (the one v2 gets there), raw
// unified keys, and that limits for absent controllers fail cleanly. The
// memory and cpu values written on a full v2 host are checked there (the
// branches below) and by TestToV2 everywhere.

func TestV2Lifecycle(t *testing.T) {
	m := v2Manager(t, Cgroupfs)
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
	if err := m.Create(ctr, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Create(ctr, nil); err != nil {
		t.Fatalf("second Create: %v", err)
	}
	dir := filepath.Join(m.mountpoint, ctr)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("%s not made: %v", dir, err)
	}

	p := startGated(t, busyThenSleep)
	if err := m.AddProcess(ctr, p.pid()); err != nil {
		t.Fatal(err)
	}
	if got := procCgroups(t, p.pid())[""]; got != ctr {
		t.Errorf("process is in v2 cgroup %q, want %q", got, ctr)
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
	_, memErr := os.Stat(filepath.Join(dir, "memory.current"))
	var st *Stats
	eventually(t, 10*time.Second, func() string {
		st, err = m.Stats(ctr, Full)
		if err != nil {
			t.Fatal(err)
		}
		// cpu.stat's usage_usec is there without the cpu controller
		if st.CPUUsageNanos == 0 || (memErr == nil && st.MemoryUsageBytes == 0) {
			return fmt.Sprintf("no CPU or memory use seen: %+v", st)
		}
		return ""
	})
	_, evErr := os.Stat(filepath.Join(dir, "memory.events"))
	if st.OOMKillCounted != (evErr == nil) || st.OOMKills != 0 || st.MemoryWorkingSetBytes > st.MemoryUsageBytes {
		t.Errorf("stats: %+v (memory.events: %v)", st, evErr)
	}
	t.Logf("container stats: %+v", st)

	for _, path := range []string{ctr, pod} {
		if err := m.Delete(path); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), fmt.Sprint(p.pid())) {
			t.Errorf("Delete(%s) with a process inside = %v, want failed precondition naming pid %d", path, err, p.pid())
		}
	}
	if !m.Exists(ctr) {
		t.Fatal("refused Delete removed the cgroup")
	}
	p.kill()
	eventually(t, 5*time.Second, func() string {
		if err := m.Delete(pod); err != nil {
			return err.Error()
		}
		return ""
	})
	if _, err := os.Stat(filepath.Join(m.mountpoint, pod)); !os.IsNotExist(err) {
		t.Errorf("%s left: %v", pod, err)
	}
	if m.Exists(ctr) || m.Exists(pod) || !m.Exists(top) {
		t.Errorf("after Delete(pod): exists ctr %v pod %v top %v", m.Exists(ctr), m.Exists(pod), m.Exists(top))
	}
	if err := m.Delete(pod); err != nil {
		t.Errorf("Delete of a deleted cgroup: %v", err)
	}
	if err := m.Update(ctr, &specs.LinuxResources{}); !errdefs.IsNotFound(err) {
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

func TestV2Controllers(t *testing.T) {
	m := v2Manager(t, Cgroupfs)
	offered, err := readFields(filepath.Join(m.mountpoint, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("controllers offered at %s: %v", m.mountpoint, offered)
	top := "/" + uniqueName(t)
	cleanupCgroup(t, m, top)
	pod, ctr := top+"/pod", top+"/pod/ctr"
	file := func(path, name string) string { return readTrim(t, filepath.Join(m.mountpoint, path, name)) }
	enabledIn := func(path, ctrl string) bool {
		f, _ := readFields(filepath.Join(m.mountpoint, path, "cgroup.subtree_control"))
		return slices.Contains(f, ctrl)
	}
	// createFails checks a Create that must fail and leave nothing behind.
	createFails := func(res *specs.LinuxResources, is func(error) bool) {
		t.Helper()
		existed := m.Exists(top)
		if err := m.Create(ctr, res); err == nil || (is != nil && !is(err)) {
			t.Errorf("Create(%+v) = %v", res, err)
		}
		if !existed && m.Exists(top) {
			t.Errorf("failed Create left %s", top)
		}
	}

	mem := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(64 << 20)), Swap: ptr(int64(96 << 20))}}
	cpu := &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: ptr(uint64(1024)), Quota: ptr(int64(50000)), Period: ptr(uint64(100000))}}
	if slices.Contains(offered, "memory") {
		if err := m.Create(ctr, mem); err != nil {
			t.Fatal(err)
		}
		if got := file(ctr, "memory.max"); got != "67108864" {
			t.Errorf("memory.max = %s", got)
		}
		if _, err := os.Stat(filepath.Join(m.mountpoint, ctr, "memory.swap.max")); err == nil {
			if got := file(ctr, "memory.swap.max"); got != "33554432" {
				t.Errorf("memory.swap.max = %s, want memory+swap minus memory", got)
			}
		}
		if !enabledIn(pod, "memory") || enabledIn(ctr, "memory") {
			t.Error("memory controller not enabled in the parents only")
		}
	} else {
		// not offered (this machine): refused, nothing left behind
		createFails(mem, errdefs.IsNotImplemented)
	}
	if slices.Contains(offered, "cpu") {
		if err := m.Create(ctr, cpu); err != nil {
			t.Fatal(err)
		}
		if got := file(ctr, "cpu.weight"); got != "100" {
			t.Errorf("cpu.weight = %s", got)
		}
		if got := file(ctr, "cpu.max"); got != "50000 100000" {
			t.Errorf("cpu.max = %s", got)
		}
	} else {
		createFails(cpu, errdefs.IsNotImplemented)
	}
	// A bad value fails in the kernel (cpuset offered) or here (not).
	createFails(&specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "4095"}}, nil)
	// Raw unified keys: cgroup.* files need no controller.
	createFails(&specs.LinuxResources{Unified: map[string]string{"cgroup.nosuch": "1"}}, errdefs.IsInvalidArgument)
	createFails(&specs.LinuxResources{Unified: map[string]string{"nosuchctl.max": "1"}}, errdefs.IsNotImplemented)
	if err := m.Create(ctr, &specs.LinuxResources{Unified: map[string]string{"cgroup.max.depth": "5"}}); err != nil {
		t.Fatal(err)
	}
	if got := file(ctr, "cgroup.max.depth"); got != "5" {
		t.Errorf("cgroup.max.depth = %s", got)
	}

	// hugetlb: enabled in every ancestor from the root down, not in the
	// cgroup itself, then limited. Kubelet sends hugepage limits on hosts
	// without the controller too: those are dropped, not an error.
	huge := &specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}}}
	_, hpErr := os.Stat("/sys/kernel/mm/hugepages/hugepages-2048kB")
	if !slices.Contains(offered, "hugetlb") || hpErr != nil {
		if err := m.Update(ctr, huge); err != nil {
			t.Errorf("hugepage limits without a hugetlb controller: %v", err)
		}
		return
	}
	t.Log("hugetlb offered: testing controller enabling and hugepage limits")
	if !enabledIn("/", "hugetlb") {
		// Leave the root of the hierarchy as it was (after the cgroups
		// are deleted: cleanups run last first).
		t.Cleanup(func() {
			f := filepath.Join(m.mountpoint, "cgroup.subtree_control")
			if err := os.WriteFile(f, []byte("-hugetlb"), 0); err != nil {
				t.Errorf("restore %s: %v", f, err)
			}
		})
		cleanupCgroup(t, m, top)
	}
	if err := m.Update(ctr, huge); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/", top, pod} {
		if !enabledIn(path, "hugetlb") {
			t.Errorf("hugetlb not enabled in %s", path)
		}
	}
	if enabledIn(ctr, "hugetlb") {
		t.Errorf("hugetlb enabled in the container cgroup's own subtree_control")
	}
	if got := file(ctr, "hugetlb.2MB.max"); got != "4194304" {
		t.Errorf("hugetlb.2MB.max = %s", got)
	}
	if err := m.Update(ctr, &specs.LinuxResources{Unified: map[string]string{"hugetlb.2MB.max": "2097152"}}); err != nil {
		t.Fatal(err)
	}
	if got := file(ctr, "hugetlb.2MB.max"); got != "2097152" {
		t.Errorf("hugetlb.2MB.max = %s after a unified update", got)
	}

	// v2 has no processes in inner cgroups: a pod cgroup that holds a
	// process cannot give controllers to a container below it.
	pod2 := top + "/pod2"
	if err := m.Create(pod2, nil); err != nil {
		t.Fatal(err)
	}
	p := startGated(t, "exec sleep 60")
	if err := m.AddProcess(pod2, p.pid()); err != nil {
		t.Fatal(err)
	}
	if err := m.Create(pod2+"/ctr", huge); err == nil || !strings.Contains(err.Error(), "no cgroup hold processes") {
		t.Errorf("Create below a cgroup with a process: %v, want EBUSY explained", err)
	}
	if m.Exists(pod2 + "/ctr") {
		t.Error("failed Create left its cgroup")
	}
	p.kill()
}

func TestNewErrors(t *testing.T) {
	if _, err := New("openrc"); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `"openrc"`) {
		t.Errorf("New with an unknown driver: %v", err)
	}
	if _, err := New(Cgroupfs, WithMode(cgroups.Unified), WithUnifiedMountpoint(t.TempDir())); !errdefs.IsUnavailable(err) {
		t.Errorf("New with a v2 mountpoint that is not cgroup2: %v", err)
	}
	if _, err := New(Cgroupfs, WithMode(cgroups.Unavailable)); !errdefs.IsUnavailable(err) {
		t.Errorf("New without cgroups: %v", err)
	}
	m, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	if m.Driver() != Cgroupfs || m.Unified() != (cgroups.Mode() == cgroups.Unified) {
		t.Errorf("New(\"\"): driver %s unified %v, host mode %v", m.Driver(), m.Unified(), cgroups.Mode())
	}
}

// Device rules as the spec generation writes them (a wildcard's number nil,
// deny-all and privileged allow-all with no type) are what every container
// has: on v2 they panicked in cgroup2's eBPF filter (nil Major) or were
// refused (type ""), and no container could be created.
func TestV2DeviceRulesAsTheSpecWritesThem(t *testing.T) {
	m := v2Manager(t, Cgroupfs)
	top := "/" + uniqueName(t)
	cleanupCgroup(t, m, top)
	c := func(major int64) *int64 { return &major }
	rules := []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: true, Type: "c", Major: c(1), Minor: c(3), Access: "rwm"}, // /dev/null
		{Allow: true, Type: "c", Major: c(136), Access: "rwm"},            // /dev/pts/*
	}
	confined := top + "/confined"
	if err := m.Create(confined, &specs.LinuxResources{Devices: rules}); err != nil {
		t.Fatalf("Create with the spec's device rules: %v", err)
	}
	privileged := top + "/privileged"
	if err := m.Create(privileged, &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}}); err != nil {
		t.Fatalf("Create with the privileged rule: %v", err)
	}
	// The filter is in force: /dev/null opens, /dev/zero does not.
	for path, want := range map[string]string{confined: "null ok\nzero denied\n", privileged: "null ok\nzero ok\n"} {
		out, err := os.CreateTemp(t.TempDir(), "out")
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", `read _; { : > /dev/null && echo null ok || echo null denied; } 2>/dev/null; { head -c1 /dev/zero >/dev/null && echo zero ok || echo zero denied; } 2>/dev/null`)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if err := m.AddProcess(path, cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		_, _ = stdin.Write([]byte("go\n"))
		_ = cmd.Wait()
		b, _ := os.ReadFile(out.Name())
		if string(b) != want {
			t.Errorf("in %s: %q, want %q", path, b, want)
		}
	}
}
