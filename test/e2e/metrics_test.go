package e2e

import (
	"context"
	"slices"
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
	podID, pod := e.pod(t, "metrics")
	cfg := ctrConfig("busy", e.image("plain"), "sh", "-c", "nc -l -p 8080 & exec sleep 300")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 96 << 20, CpuShares: 512, CpuPeriod: 100000, CpuQuota: 50000}
	id := e.run(t, podID, pod, cfg)

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
	var got map[string]*runtimeapi.Metric
	waitFor(t, func() bool {
		resp, err := e.d.runtime.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		got = map[string]*runtimeapi.Metric{}
		for _, pm := range resp.PodMetrics {
			if pm.PodSandboxId != podID {
				continue
			}
			all := slices.Clone(pm.Metrics)
			for _, cm := range pm.ContainerMetrics {
				if cm.ContainerId != id {
					t.Errorf("container metrics of %s in pod %s", cm.ContainerId, podID)
				}
				all = append(all, cm.Metrics...)
			}
			for _, m := range all {
				n, ok := keys[m.Name]
				if !ok || n != len(m.LabelValues) {
					t.Fatalf("metric %s: %d label values, descriptor has %d (described: %v)", m.Name, len(m.LabelValues), n, ok)
				}
				if _, seen := got[m.Name]; !seen {
					got[m.Name] = m
				}
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
	if m := got["container_network_receive_bytes_total"]; m == nil || m.LabelValues[len(m.LabelValues)-1] != "eth0" {
		t.Errorf("no network series for the pod's eth0: %v", m)
	}
	if m := got["container_memory_usage_bytes"]; m.LabelValues[0] != "busy" || m.LabelValues[3] != id || m.LabelValues[5] != "metrics" {
		t.Errorf("labels container, name, pod: %q", m.LabelValues)
	}
}
