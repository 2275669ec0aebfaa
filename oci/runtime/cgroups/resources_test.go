package cgroups

import (
	"math"
	"reflect"
	"slices"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func ptr[T any](v T) *T { return &v }

func TestResourcesFromCRI(t *testing.T) {
	if ResourcesFromCRI(nil) != nil {
		t.Error("ResourcesFromCRI(nil) != nil")
	}
	if got := ResourcesFromCRI(&runtimeapi.LinuxContainerResources{}); !reflect.DeepEqual(got, &specs.LinuxResources{}) {
		t.Errorf("empty CRI resources = %+v, want empty OCI resources", got)
	}
	in := &runtimeapi.LinuxContainerResources{
		CpuPeriod:              100000,
		CpuQuota:               50000,
		CpuShares:              512,
		MemoryLimitInBytes:     64 << 20,
		MemorySwapLimitInBytes: 128 << 20,
		CpusetCpus:             "0-1",
		CpusetMems:             "0",
		HugepageLimits:         []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}, {PageSize: "1GB", Limit: 0}},
		Unified:                map[string]string{"memory.high": "50000000"},
		OomScoreAdj:            100, // not a cgroup setting
	}
	want := &specs.LinuxResources{
		CPU: &specs.LinuxCPU{
			Period: ptr(uint64(100000)),
			Quota:  ptr(int64(50000)),
			Shares: ptr(uint64(512)),
			Cpus:   "0-1",
			Mems:   "0",
		},
		Memory: &specs.LinuxMemory{
			Limit: ptr(int64(64 << 20)),
			Swap:  ptr(int64(128 << 20)),
		},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}, {Pagesize: "1GB", Limit: 0}},
		Unified:        map[string]string{"memory.high": "50000000"},
	}
	got := ResourcesFromCRI(in)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ResourcesFromCRI =\n%+v\nwant\n%+v", got, want)
	}
	in.Unified["memory.high"] = "1"
	if got.Unified["memory.high"] != "50000000" {
		t.Error("unified map shared with the CRI request")
	}

	// A memory limit alone means no swap (memory+swap = memory), as
	// containerd does; a swap limit alone is passed on.
	got = ResourcesFromCRI(&runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 30})
	if *got.Memory.Limit != 1<<30 || *got.Memory.Swap != 1<<30 || got.CPU != nil {
		t.Errorf("memory limit only: %+v", got.Memory)
	}
	got = ResourcesFromCRI(&runtimeapi.LinuxContainerResources{MemorySwapLimitInBytes: -1, CpuShares: 2})
	if got.Memory.Limit != nil || *got.Memory.Swap != -1 || *got.CPU.Shares != 2 || got.CPU.Quota != nil || got.CPU.Period != nil {
		t.Errorf("swap only: %+v %+v", got.Memory, got.CPU)
	}
}

// TestToV2 covers the v1 -> v2 conversion the v2 code writes. The memory and
// cpu files themselves cannot be written on this machine (its cgroup2
// hierarchy has no memory or cpu controller), so the values are checked here.
func TestToV2(t *testing.T) {
	r, err := toV2(&specs.LinuxResources{
		CPU:            &specs.LinuxCPU{Shares: ptr(uint64(1024)), Quota: ptr(int64(50000)), Period: ptr(uint64(100000)), Cpus: "0"},
		Memory:         &specs.LinuxMemory{Limit: ptr(int64(64 << 20)), Swap: ptr(int64(96 << 20)), Reservation: ptr(int64(32 << 20))},
		Pids:           &specs.LinuxPids{Limit: ptr(int64(100))},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 1 << 21}},
		Unified:        map[string]string{"memory.high": "1", "cgroup.max.depth": "3"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if w := *r.res.CPU.Weight; w != cgroup2.ConvertCPUSharesToCgroupV2Value(1024) || w != 100 {
		t.Errorf("weight of 1024 shares = %d, want 100 (the default weight)", w)
	}
	if r.res.CPU.Max != "50000 100000" || r.res.CPU.Cpus != "0" {
		t.Errorf("cpu = %+v", r.res.CPU)
	}
	if *r.res.Memory.Max != 64<<20 || *r.res.Memory.Swap != 32<<20 || *r.res.Memory.Low != 32<<20 {
		t.Errorf("memory max %d swap %d low %d", *r.res.Memory.Max, *r.res.Memory.Swap, *r.res.Memory.Low)
	}
	if r.res.Pids.Max != 100 || len(*r.res.HugeTlb) != 1 {
		t.Errorf("pids %+v hugetlb %+v", r.res.Pids, r.res.HugeTlb)
	}
	need := slices.Clone(r.need)
	slices.Sort(need)
	if want := []string{"cpu", "cpuset", "memory", "memory", "pids"}; !slices.Equal(need, want) {
		t.Errorf("needed controllers %v, want %v (hugetlb is added by applyV2 when offered)", need, want)
	}

	// "unlimited" (-1) becomes "max": the kernel refuses "-1" in v2 files.
	r, err = toV2(&specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Quota: ptr(int64(-1)), Shares: ptr(uint64(0))},
		Memory: &specs.LinuxMemory{Limit: ptr(int64(-1)), Swap: ptr(int64(-1))},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.res.CPU.Max != "max 100000" || r.res.CPU.Weight != nil {
		t.Errorf("cpu = %+v", r.res.CPU)
	}
	if *r.res.Memory.Max != math.MaxInt64 || *r.res.Memory.Swap != math.MaxInt64 {
		t.Errorf("memory max %d swap %d", *r.res.Memory.Max, *r.res.Memory.Swap)
	}
	r, err = toV2(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(1 << 20)), Swap: ptr(int64(-1))}})
	if err != nil || *r.res.Memory.Swap != math.MaxInt64 {
		t.Errorf("limit with unlimited swap: %v", err)
	}
	// A quota without a period gets the default period.
	r, _ = toV2(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr(int64(20000))}})
	if r.res.CPU.Max != "20000 100000" {
		t.Errorf("quota without period: %q", r.res.CPU.Max)
	}
	r, _ = toV2(nil)
	if r.res == nil || len(r.need) != 0 {
		t.Errorf("toV2(nil) = %+v", r)
	}

	for _, bad := range []*specs.LinuxResources{
		{Memory: &specs.LinuxMemory{Limit: ptr(int64(2 << 20)), Swap: ptr(int64(1 << 20))}},
		{Memory: &specs.LinuxMemory{Swap: ptr(int64(1 << 20))}},
		{Unified: map[string]string{"../memory.max": "1"}},
		{Unified: map[string]string{"nodot": "1"}},
		{Unified: map[string]string{".max": "1"}},
	} {
		if _, err := toV2(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("toV2(%+v) = %v, want invalid argument", bad, err)
		}
	}
}
