package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The e2e tests run on cgroup v1 hosts (this project's machine) and on
// pure cgroup v2 ones (make vm-test's guest): these read what either has.

// unifiedHost: /sys/fs/cgroup is the cgroup2 hierarchy itself.
var unifiedHost = func() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}()

// cgroupDir is a cgroup's directory in the pids hierarchy on v1 (every
// cgroup husk makes is in it), the only one on v2.
func cgroupDir(cgroup string) string {
	if unifiedHost {
		return filepath.Join("/sys/fs/cgroup", cgroup)
	}
	return filepath.Join("/sys/fs/cgroup/pids", cgroup)
}

// cgroupLimits reads a cgroup's memory limit and CPU weight, as v1 or v2
// writes them; noMemoryLimit and cpuWeight say what a test expects in the
// same terms.
func cgroupLimits(cgroup string) (memory, cpu string) {
	read := func(p ...string) string {
		b, _ := os.ReadFile(filepath.Join(p...))
		return strings.TrimSpace(string(b))
	}
	if unifiedHost {
		return read("/sys/fs/cgroup", cgroup, "memory.max"), read("/sys/fs/cgroup", cgroup, "cpu.weight")
	}
	return read("/sys/fs/cgroup/memory", cgroup, "memory.limit_in_bytes"), read("/sys/fs/cgroup/cpu", cgroup, "cpu.shares")
}

func noMemoryLimit() string {
	if unifiedHost {
		return "max"
	}
	return "9223372036854771712"
}

// cpuWeight is what cpu shares become: v1 keeps them, v2 converts them
// (0: the default).
func cpuWeight(shares uint64) string {
	if unifiedHost {
		if shares == 0 {
			return "100"
		}
		return fmt.Sprint(cgroup2.ConvertCPUSharesToCgroupV2Value(shares))
	}
	if shares == 0 {
		return "1024"
	}
	return fmt.Sprint(shares)
}

// e2eDriver is the cgroup driver the tests' daemons run with
// (HUSK_E2E_CGROUP_DRIVER, daemon_test.go).
func e2eDriver() string {
	if d := os.Getenv("HUSK_E2E_CGROUP_DRIVER"); d != "" {
		return d
	}
	return "cgroupfs"
}

// systemdHost: systemd is PID 1 on cgroup v2 alone, where the systemd
// driver works.
func systemdHost() bool {
	comm, _ := os.ReadFile("/proc/1/comm")
	return unifiedHost && strings.TrimSpace(string(comm)) == "systemd"
}

// huskCgroupRoot is where pods without a cgroup_parent go.
func huskCgroupRoot() string {
	if e2eDriver() == "systemd" {
		return cgroupDir("/husk.slice")
	}
	return cgroupDir("/husk")
}

// wholeDisk is the major:minor of a disk (not a partition, not a loop or
// ram device) that io.max can limit, or "" if the machine has none.
func wholeDisk() string {
	entries, _ := os.ReadDir("/sys/block")
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "zram") {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "dev")); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

// removeCgroupDirs removes the directories of cgroups a test made itself
// (kubelet's, which husk only uses), deepest first, in every hierarchy.
func removeCgroupDirs(paths ...string) {
	roots := []string{"/sys/fs/cgroup"}
	if entries, err := os.ReadDir("/sys/fs/cgroup"); err == nil && !unifiedHost {
		for _, e := range entries {
			roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	for _, p := range paths {
		for _, r := range roots {
			_ = os.Remove(filepath.Join(r, p))
		}
	}
}

// removeCgroupTree removes a cgroup that kubelet made, and every cgroup
// below it, deepest first, in every hierarchy.
func removeCgroupTree(p string) {
	var dirs []string
	roots := []string{"/sys/fs/cgroup"}
	if entries, err := os.ReadDir("/sys/fs/cgroup"); err == nil && !unifiedHost {
		roots = nil
		for _, e := range entries {
			roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	for _, r := range roots {
		_ = filepath.WalkDir(filepath.Join(r, p), func(path string, de os.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Remove(dirs[i])
	}
}

// containerCgroup is the cgroup a container's record names.
func containerCgroup(t *testing.T, d *daemon, id string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.root, "containers", id, "container.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Cgroup string `json:"cgroup"`
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec.Cgroup == "" {
		t.Fatalf("container record: %v %q", err, b)
	}
	return rec.Cgroup
}

// A container's limits are in its cgroup's files as the host's version
// writes them: v1's cpu.cfs_*, cpu.shares, memory.limit_in_bytes; v2's
// cpu.max, cpu.weight, memory.max, memory.swap.max (no swap unless asked),
// and the unified keys kubelet sends on v2 (memory.high of MemoryQoS,
// memory.oom.group when singleProcessOOMKill is off).
func TestContainerCgroupHoldsItsLimits(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "limits")
	cfg := ctrConfig("limited", e.image("plain"), "sleep", "300")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{
		CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 64 << 20, CpusetCpus: "0",
	}
	if unifiedHost {
		cfg.Linux.Resources.Unified = map[string]string{"memory.high": fmt.Sprint(60 << 20), "memory.oom.group": "1"}
	}
	id := e.run(t, podID, pod, cfg)
	cg := containerCgroup(t, e.d, id)
	read := func(ctrl, file string) string {
		dir := filepath.Join("/sys/fs/cgroup", ctrl, cg)
		if unifiedHost {
			dir = filepath.Join("/sys/fs/cgroup", cg)
		}
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return "(" + err.Error() + ")"
		}
		return strings.TrimSpace(string(b))
	}
	want := map[[2]string]string{
		{"cpuset", "cpuset.cpus"}: "0",
	}
	if unifiedHost {
		want[[2]string{"", "cpu.max"}] = "50000 100000"
		want[[2]string{"", "cpu.weight"}] = cpuWeight(512)
		want[[2]string{"", "memory.max"}] = fmt.Sprint(64 << 20)
		want[[2]string{"", "memory.high"}] = fmt.Sprint(60 << 20)
		want[[2]string{"", "memory.oom.group"}] = "1"
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", cg, "memory.swap.max")); err == nil {
			want[[2]string{"", "memory.swap.max"}] = "0"
		}
	} else {
		want[[2]string{"cpu", "cpu.cfs_quota_us"}] = "50000"
		want[[2]string{"cpu", "cpu.cfs_period_us"}] = "100000"
		want[[2]string{"cpu", "cpu.shares"}] = "512"
		want[[2]string{"memory", "memory.limit_in_bytes"}] = fmt.Sprint(64 << 20)
	}
	for k, v := range want {
		if got := read(k[0], k[1]); got != v {
			t.Errorf("%s: %q, want %q", k[1], got, v)
		}
	}
	// A resize reaches the files.
	if _, err := e.d.runtime.UpdateContainerResources(t.Context(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 70000, MemoryLimitInBytes: 96 << 20}}); err != nil {
		t.Fatal(err)
	}
	quota, memory := read("cpu", "cpu.cfs_quota_us"), read("memory", "memory.limit_in_bytes")
	wantQuota := "70000"
	if unifiedHost {
		quota, memory, wantQuota = read("", "cpu.max"), read("", "memory.max"), "70000 100000"
	}
	if quota != wantQuota || memory != fmt.Sprint(96<<20) {
		t.Errorf("after a resize: cpu %q memory %q, want %q and %d", quota, memory, wantQuota, 96<<20)
	}
	if !unifiedHost {
		return
	}
	// kubelet's LimitedSwap: memory+swap in the CRI, swap alone in v2's
	// memory.swap.max; and the hugepage limits kubelet sends for every size
	// the node has, where the hugetlb controller is offered.
	cfg = ctrConfig("swap", e.image("plain"), "sleep", "300")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, MemorySwapLimitInBytes: 96 << 20,
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}}}
	// io.weight, where the kernel has the io cost model (the pod's cgroup
	// has the file when its children can).
	_, podInfo := podStatus(t, e.d, podID)
	ioWeight := false
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", podInfo.CgroupPath, "io.weight")); err == nil {
		ioWeight = true
		cfg.Linux.Resources.Unified = map[string]string{"io.weight": "default 200"}
	}
	// io.max on a whole disk (the kernel refuses partitions), where the pod
	// has the io controller.
	disk := ""
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", podInfo.CgroupPath, "io.max")); err == nil {
		disk = wholeDisk()
	}
	if disk != "" {
		if cfg.Linux.Resources.Unified == nil {
			cfg.Linux.Resources.Unified = map[string]string{}
		}
		cfg.Linux.Resources.Unified["io.max"] = disk + " rbps=1048576 wiops=120"
	}
	id = e.run(t, podID, pod, cfg)
	cg = containerCgroup(t, e.d, id)
	if got := read("", "io.weight"); ioWeight && got != "default 200" {
		t.Errorf("io.weight %q, want %q", got, "default 200")
	} else {
		t.Logf("io.weight %q (the kernel has it: %v)", got, ioWeight)
	}
	if want := disk + " rbps=1048576 wbps=max riops=max wiops=120"; disk != "" && read("", "io.max") != want {
		t.Errorf("io.max %q, want %q", read("", "io.max"), want)
	} else {
		t.Logf("io.max %q (disk %q)", read("", "io.max"), disk)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", cg, "memory.swap.max")); err == nil {
		if got := read("", "memory.swap.max"); got != fmt.Sprint(32<<20) {
			t.Errorf("LimitedSwap: memory.swap.max %q, want %d", got, 32<<20)
		}
	}
	if b, _ := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); strings.Contains(string(b), "hugetlb") {
		if got := read("", "hugetlb.2MB.max"); got != "0" {
			t.Errorf("hugetlb.2MB.max %q, want 0", got)
		}
	}
}
