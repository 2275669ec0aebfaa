package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// rssKiB reads a process's resident set size.
func rssKiB(t testing.TB, pid int) float64 { return statusKiB(t, pid, "VmRSS") }

// statusKiB reads a size field of /proc/PID/status (VmRSS, VmHWM).
func statusKiB(t testing.TB, pid int, field string) float64 {
	t.Helper()
	v, err := procField(pid, "status", field)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func removeAll(b *testing.B, d *daemon, ids []string) {
	for _, id := range ids {
		if _, err := d.runtime.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunPodSandbox measures RunPodSandbox over gRPC on the default
// kind of network (bridge, host-local, portmap, bandwidth): the latency of
// 50 pods made one after the other, then of 20 made at once (all in
// parallel, and by 4 workers as containerd was measured), and the memory
// the daemon holds per running pod. Run with -benchtime 1x; see
// docs/benchmarks.md.
func BenchmarkRunPodSandbox(b *testing.B) {
	d, _ := newPodDaemon(b)
	ctx := context.Background()
	run := func(name string) (string, time.Duration) {
		start := time.Now()
		resp, err := d.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig(name)})
		if err != nil {
			b.Fatal(err)
		}
		return resp.PodSandboxId, time.Since(start)
	}
	for i := 0; i < b.N; i++ {
		// Warm-up: the first pod creates the bridge.
		id, _ := run(fmt.Sprintf("warm-%d", i))
		removeAll(b, d, []string{id})

		var seq []time.Duration
		var ids []string
		rssBefore := rssKiB(b, d.cmd.Process.Pid)
		for j := range 50 {
			id, took := run(fmt.Sprintf("seq-%d-%d", i, j))
			seq = append(seq, took)
			ids = append(ids, id)
		}
		rssAfter := rssKiB(b, d.cmd.Process.Pid)
		b.ReportMetric(ms(percentile(seq, 0.5)), "seq-p50-ms")
		b.ReportMetric(ms(percentile(seq, 0.9)), "seq-p90-ms")
		b.ReportMetric((rssAfter-rssBefore)/50, "daemon-KiB/pod")
		removeAll(b, d, ids)

		for _, workers := range []int{20, 4} {
			var mu sync.Mutex
			var par []time.Duration
			ids = ids[:0]
			jobs := make(chan int)
			var wg sync.WaitGroup
			start := time.Now()
			for range workers {
				wg.Go(func() {
					for j := range jobs {
						id, took := run(fmt.Sprintf("par%d-%d-%d", workers, i, j))
						mu.Lock()
						par = append(par, took)
						ids = append(ids, id)
						mu.Unlock()
					}
				})
			}
			for j := range 20 {
				jobs <- j
			}
			close(jobs)
			wg.Wait()
			elapsed := time.Since(start)
			b.ReportMetric(ms(percentile(par, 0.5)), fmt.Sprintf("par%d-p50-ms", workers))
			b.ReportMetric(ms(percentile(par, 0.9)), fmt.Sprintf("par%d-p90-ms", workers))
			b.ReportMetric(20/elapsed.Seconds(), fmt.Sprintf("par%d-pods/s", workers))
			removeAll(b, d, ids)
		}
	}
}

// BenchmarkRunPodSandboxUserns is the sequential part of
// BenchmarkRunPodSandbox for pods with user namespaces of their own
// (hostUsers: false), each with its own 65536 ids, with and without a
// shared PID namespace (whose init the user namespace changes most).
func BenchmarkRunPodSandboxUserns(b *testing.B) {
	d, _ := newPodDaemon(b)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		for _, pid := range []runtimeapi.NamespaceMode{runtimeapi.NamespaceMode_CONTAINER, runtimeapi.NamespaceMode_POD} {
			var seq []time.Duration
			var ids []string
			for j := range 31 {
				cfg := podConfig(fmt.Sprintf("userns-%d-%d-%d", i, pid, j))
				cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
					Pid: pid, UsernsOptions: usernsOptions(runtimeapi.NamespaceMode_POD, uint32(usernsHost+j*65536)),
				}}
				start := time.Now()
				resp, err := d.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
				if err != nil {
					b.Fatal(err)
				}
				if j > 0 { // the first one creates the bridge
					seq = append(seq, time.Since(start))
				}
				ids = append(ids, resp.PodSandboxId)
			}
			b.ReportMetric(ms(percentile(seq, 0.5)), fmt.Sprintf("%v-pid-p50-ms", strings.ToLower(pid.String())))
			removeAll(b, d, ids)
		}
	}
}
