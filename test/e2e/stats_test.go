package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestContainerAndPodStats(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "stats")
	// 24 MiB in the pod's /dev/shm (a tmpfs charged to the writer's
	// cgroup) and 1 MiB in its writable layer.
	id := e.run(t, podID, pod, ctrConfig("user", e.image("plain"), "sh", "-c",
		"dd if=/dev/zero of=/dev/shm/x bs=1M count=24 2>/dev/null; dd if=/dev/zero of=/layer bs=1M count=1 2>/dev/null; echo ready; sleep 300"))
	waitFor(t, func() bool {
		st := e.status(t, id)
		out := output(t, st.LogPath, "stdout")
		return len(out) == 1 && out[0] == "ready"
	})
	resp, err := e.d.runtime.ContainerStats(context.Background(), &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	st := resp.Stats
	if st.GetMemory().GetWorkingSetBytes().GetValue() < 20<<20 || st.GetCpu().GetUsageCoreNanoSeconds().GetValue() == 0 {
		t.Errorf("container stats: memory %v cpu %v", st.GetMemory(), st.GetCpu())
	}
	// Pressure stall information (KEP-4205) where the kernel has it:
	// cgroup v2's *.pressure files.
	if unifiedHost {
		if st.GetCpu().GetPsi().GetSome() == nil || st.GetMemory().GetPsi().GetFull() == nil || st.GetIo().GetPsi().GetSome() == nil {
			t.Errorf("no pressure stall information on cgroup v2: cpu %v memory %v io %v", st.GetCpu().GetPsi(), st.GetMemory().GetPsi(), st.GetIo())
		}
	} else if st.GetCpu().GetPsi() != nil || st.GetIo().GetPsi() != nil {
		t.Errorf("pressure stall information on cgroup v1: %v %v", st.GetCpu().GetPsi(), st.GetIo())
	}
	// io is there without PSI too: kubelet reports a pod's only if sent.
	if st.GetIo().GetTimestamp() == 0 {
		t.Errorf("container io: %v", st.GetIo())
	}
	if st.GetWritableLayer().GetUsedBytes().GetValue() < 1<<20 {
		t.Errorf("writable layer: %v", st.GetWritableLayer())
	}
	list, err := e.d.runtime.ListContainerStats(context.Background(), &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{PodSandboxId: podID}})
	if err != nil || len(list.Stats) != 1 || list.Stats[0].Attributes.Id != id {
		t.Errorf("ListContainerStats: %v, %v", list, err)
	}
	ps, err := e.d.runtime.PodSandboxStats(context.Background(), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	if ps.Stats.GetLinux().GetMemory().GetWorkingSetBytes().GetValue() < 20<<20 || len(ps.Stats.GetLinux().GetContainers()) != 1 || ps.Stats.GetLinux().GetProcess().GetProcessCount().GetValue() == 0 {
		t.Errorf("pod stats: %v", ps.Stats.GetLinux())
	}
	if io := ps.Stats.GetLinux().GetIo(); io.GetTimestamp() == 0 || (io.GetPsi() != nil) != unifiedHost {
		t.Errorf("pod io stats (PSI on cgroup v2 only): %v", io)
	}
	// The pod's network (kubelet's /stats/summary takes it from here).
	if n := ps.Stats.GetLinux().GetNetwork(); n.GetDefaultInterface().GetName() != "eth0" || n.GetDefaultInterface().GetRxBytes() == nil || len(n.GetInterfaces()) != 1 {
		t.Errorf("pod network stats: %v", n)
	}
	// crictl shows them.
	if out := e.d.mustCrictl("stats", id); !strings.Contains(out, "user") {
		t.Errorf("crictl stats:\n%s", out)
	}
	// Limits change in place.
	if _, err := e.d.runtime.UpdateContainerResources(context.Background(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 256 << 20}}); err != nil {
		t.Fatal(err)
	}
	resp, _ = e.d.runtime.ContainerStats(context.Background(), &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if avail := resp.GetStats().GetMemory().GetAvailableBytes().GetValue(); avail == 0 || avail > 256<<20 {
		t.Errorf("available memory after a 256 MiB limit: %d", avail)
	}
}

// The stats Lists answer from the last sample (stats_max_age) and take
// the next one after the call, for the next; ContainerStats and
// PodSandboxStats read now. `crictl stats` (above) needs the Lists' CPU
// sample renewed within its one second.
func TestStatsListsAnswerFromSamples(t *testing.T) {
	e := newCtrEnv(t, `stats_max_age = "1m"`)
	ctx := context.Background()
	podID, pod := e.pod(t, "sampled")
	id := e.run(t, podID, pod, ctrConfig("sleeper", e.image("plain"), "sleep", "300"))

	list := func() (ctr, pod int64) {
		cs, err := e.d.runtime.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{Id: id}})
		if err != nil || len(cs.Stats) != 1 {
			t.Fatalf("ListContainerStats: %v, %v", cs, err)
		}
		ps, err := e.d.runtime.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{Filter: &runtimeapi.PodSandboxStatsFilter{Id: podID}})
		if err != nil || len(ps.Stats) != 1 || len(ps.Stats[0].GetLinux().GetContainers()) != 1 {
			t.Fatalf("ListPodSandboxStats: %v, %v", ps, err)
		}
		return cs.Stats[0].GetCpu().GetTimestamp(), ps.Stats[0].GetLinux().GetCpu().GetTimestamp()
	}
	// Nothing was sampled: the first Lists read.
	called := time.Now().UnixNano()
	if ctr, pod := list(); ctr < called || pod < called {
		t.Errorf("the first Lists answered with samples from before them: %d, %d < %d", ctr, pod, called)
	}
	// Each later List answers with a sample taken before it was called,
	// and newer than the one before (taken after that List).
	prev, _ := list()
	for range 3 {
		time.Sleep(time.Second)
		called := time.Now().UnixNano()
		ctr, pod := list()
		if ctr <= prev || ctr >= called || pod >= called {
			t.Errorf("List a second after the last: samples at %d (container) and %d (pod), want both before the call at %d and the container's after the last List's %d", ctr, pod, called, prev)
		}
		prev = ctr
	}
	// New limits show in the next List, not one sample later.
	avail := func(s *runtimeapi.ContainerStats) uint64 { return s.GetMemory().GetAvailableBytes().GetValue() }
	if _, err := e.d.runtime.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 200 << 20}}); err != nil {
		t.Fatal(err)
	}
	cs, err := e.d.runtime.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{Id: id}})
	if err != nil || len(cs.Stats) != 1 || avail(cs.Stats[0]) == 0 || avail(cs.Stats[0]) > 200<<20 {
		t.Errorf("ListContainerStats right after a 200 MiB limit: %v, %v", cs, err)
	}
	called = time.Now().UnixNano()
	resp, err := e.d.runtime.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil || resp.Stats.GetCpu().GetTimestamp() < called {
		t.Errorf("ContainerStats read before the call (%d < %d): %v", resp.GetStats().GetCpu().GetTimestamp(), called, err)
	}
	ps, err := e.d.runtime.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID})
	if err != nil || ps.Stats.GetLinux().GetCpu().GetTimestamp() < called || ps.Stats.GetLinux().GetContainers()[0].GetCpu().GetTimestamp() < called {
		t.Errorf("PodSandboxStats read before the call: %v, %v", ps.GetStats().GetLinux(), err)
	}
}
