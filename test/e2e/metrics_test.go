package e2e

import (
	"context"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The CRI metrics (kubelet's PodAndContainerStatsFromCRI): every series is
// described, with as many label values as its descriptor has keys, and
// what they say matches the container.
func TestPodSandboxMetrics(t *testing.T) {
	e := newCtrEnv(t)
	ctx := context.Background()
	podID, podCfg := e.pod(t, "metrics")
	cfg := ctrConfig("busy", e.image("plain"), "sh", "-c", "nc -l -p 8080 & exec sleep 300")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 96 << 20, CpuShares: 512, CpuPeriod: 100000, CpuQuota: 50000}
	id := e.run(t, podID, podCfg, cfg)
	// The first List reads what the container has then, and later ones
	// may answer from that sample for a stats_period: nc listens first.
	waitFor(t, func() bool {
		r, err := e.exec(t, id, 5, "sh", "-c", "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ':1F90 0[0-9A-F]*:0000 0A'")
		return err == nil && r.ExitCode == 0
	})

	descs, err := e.d.runtime.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]int{}
	for _, d := range descs.Descriptors {
		if d.Help == "" || len(d.LabelKeys) == 0 {
			t.Errorf("descriptor %s: no help or no labels", d.Name)
		}
		keys[d.Name] = len(d.LabelKeys)
	}
	// got: the container's series; pod: the pod cgroup's (container="")
	// and the pod network's (container="POD"), by name.
	var got, pod map[string]*runtimeapi.Metric
	waitFor(t, func() bool {
		resp, err := e.d.runtime.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		got, pod = map[string]*runtimeapi.Metric{}, map[string]*runtimeapi.Metric{}
		add := func(to map[string]*runtimeapi.Metric, ms []*runtimeapi.Metric) {
			for _, m := range ms {
				n, ok := keys[m.Name]
				if !ok || n != len(m.LabelValues) {
					t.Fatalf("metric %s: %d label values, descriptor has %d (described: %v)", m.Name, len(m.LabelValues), n, ok)
				}
				if _, seen := to[m.Name]; !seen {
					to[m.Name] = m
				}
			}
		}
		for _, pm := range resp.PodMetrics {
			if pm.PodSandboxId != podID {
				continue
			}
			add(pod, pm.Metrics)
			for _, cm := range pm.ContainerMetrics {
				if cm.ContainerId != id {
					t.Errorf("container metrics of %s in pod %s", cm.ContainerId, podID)
				}
				add(got, cm.Metrics)
			}
		}
		// nc's socket is open once it listens.
		return got["container_sockets"].GetValue().GetValue() >= 1
	})
	for name, want := range map[string]uint64{
		"container_spec_memory_limit_bytes": 96 << 20,
		"container_spec_cpu_shares":         512,
		"container_spec_cpu_quota":          50000,
		"container_processes":               2,
	} {
		if v := got[name].GetValue().GetValue(); v != want {
			t.Errorf("%s = %d, want %d", name, v, want)
		}
	}
	if v := got["container_memory_usage_bytes"].GetValue().GetValue(); v == 0 {
		t.Errorf("container_memory_usage_bytes = 0")
	}
	if v := int64(got["container_start_time_seconds"].GetValue().GetValue()); v < time.Now().Add(-time.Minute).Unix() || v > time.Now().Unix() {
		t.Errorf("container_start_time_seconds = %d", v)
	}
	if v := int64(got["container_creation_time_seconds"].GetValue().GetValue()); v < time.Now().Add(-time.Minute).Unix() || v > time.Now().Unix() {
		t.Errorf("container_creation_time_seconds = %d", v)
	}
	if m := got["container_ulimits_soft"]; m.GetValue().GetValue() == 0 || m.LabelValues[len(m.LabelValues)-1] != "max_open_files" {
		t.Errorf("container_ulimits_soft: %v", m)
	}
	if m := pod["container_network_receive_bytes_total"]; m == nil || m.LabelValues[0] != "POD" || m.LabelValues[len(m.LabelValues)-1] != "eth0" {
		t.Errorf("no network series for the pod's eth0: %v", m)
	}
	// The pod's cgroup, as cAdvisor labels it: no container, image or
	// name; it holds the container's processes and memory (read a moment
	// before the container's, which may have grown since: not compared).
	if m := pod["container_memory_usage_bytes"]; m == nil || m.LabelValues[0] != "" || m.LabelValues[2] != "" || m.LabelValues[3] != "" || m.LabelValues[5] != "metrics" ||
		m.GetValue().GetValue() == 0 {
		t.Errorf("pod cgroup's memory: %v", m)
	}
	if v := pod["container_processes"].GetValue().GetValue(); v < 2 {
		t.Errorf("pod cgroup's container_processes = %d", v)
	}
	if m := got["container_memory_usage_bytes"]; m.LabelValues[0] != "busy" || m.LabelValues[3] != id || m.LabelValues[5] != "metrics" {
		t.Errorf("labels container, name, pod: %q", m.LabelValues)
	}
}
