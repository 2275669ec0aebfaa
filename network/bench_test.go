package network

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkCNIChain is what the CNI plugins alone take, with no daemon:
// ADD and DEL of a network like husk's default (bridge with host-local,
// portmap, bandwidth; masqueraded once by husk), one pod after the
// other, p50 of 20. RunPodSandbox and StopPodSandbox cannot take less.
func BenchmarkCNIChain(b *testing.B) {
	n := newTestNet(b)
	n.writeConf(b, "10-bench.conflist", netOpts{masquerade: true})
	m := n.manager(b)
	ctx := context.Background()
	var adds, dels []time.Duration
	for b.Loop() {
		for range 20 {
			pod := n.newPod(b)
			t0 := time.Now()
			if _, err := m.Setup(ctx, pod); err != nil {
				b.Fatal(err)
			}
			adds = append(adds, time.Since(t0))
			t0 = time.Now()
			if err := m.Teardown(ctx, pod); err != nil {
				b.Fatal(err)
			}
			dels = append(dels, time.Since(t0))
		}
	}
	p50 := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds()) / 1000
	}
	b.ReportMetric(p50(adds), "ADD-p50-ms")
	b.ReportMetric(p50(dels), "DEL-p50-ms")
}
