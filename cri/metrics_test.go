package cri

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/sandbox"
)

// metricsResponse is a ListPodSandboxMetrics answer for pods of two
// containers, each target with every described series once, labelled as
// husk labels them (a kubepods cgroup path, a 64-hex id, an image).
func metricsResponse(pods int) *runtimeapi.ListPodSandboxMetricsResponse {
	descs := sandbox.MetricDescriptors()
	series := func(container, id string) []*runtimeapi.Metric {
		var out []*runtimeapi.Metric
		for _, d := range descs {
			labels := []string{container, "/kubepods/besteffort/pod" + id[:36] + "/" + id, "registry.example/team/app:1.2.3", id, "default", "pod-" + id[:8]}
			for range len(d.LabelKeys) - len(labels) {
				labels = append(labels, "eth0")
			}
			out = append(out, &runtimeapi.Metric{Name: d.Name, MetricType: runtimeapi.MetricType_GAUGE, LabelValues: labels, Value: &runtimeapi.UInt64Value{Value: 123456789}})
		}
		return out
	}
	resp := &runtimeapi.ListPodSandboxMetricsResponse{}
	for i := range pods {
		id := fmt.Sprintf("%064x", i)
		pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: id, Metrics: series("", id)}
		for c := range 2 {
			cid := strings.Repeat(fmt.Sprint(c), 8) + id[8:]
			pm.ContainerMetrics = append(pm.ContainerMetrics, &runtimeapi.ContainerMetrics{ContainerId: cid, Metrics: series(fmt.Sprint("c", c), cid)})
		}
		resp.PodMetrics = append(resp.PodMetrics, pm)
	}
	return resp
}

// BenchmarkMetricsResponse250Pods: what encoding and decoding the answer
// for 250 pods costs, before anything is read: the floor of the call
// however its series are gathered.
func BenchmarkMetricsResponse250Pods(b *testing.B) {
	resp := metricsResponse(250)
	wire, err := proto.Marshal(resp)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d pods: %.1f MB", 250, float64(len(wire))/1e6)
	for b.Loop() {
		w, err := proto.Marshal(resp)
		if err != nil {
			b.Fatal(err)
		}
		var got runtimeapi.ListPodSandboxMetricsResponse
		if err := proto.Unmarshal(w, &got); err != nil {
			b.Fatal(err)
		}
	}
}
