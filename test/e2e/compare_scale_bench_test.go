package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// listCalls are what kubelet polls: the first two every second for its
// relist (PLEG), the stats for its summary and eviction every 10 s or so.
var listCalls = []struct {
	name string
	call func(context.Context, runtimeapi.RuntimeServiceClient) error
}{
	{"ListPodSandbox", func(ctx context.Context, rt runtimeapi.RuntimeServiceClient) error {
		_, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		return err
	}},
	{"ListContainers", func(ctx context.Context, rt runtimeapi.RuntimeServiceClient) error {
		_, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		return err
	}},
	{"ListContainerStats", func(ctx context.Context, rt runtimeapi.RuntimeServiceClient) error {
		_, err := rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
		return err
	}},
	{"ListPodSandboxStats", func(ctx context.Context, rt runtimeapi.RuntimeServiceClient) error {
		_, err := rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
		return err
	}},
	{"ListPodSandboxMetrics", func(ctx context.Context, rt runtimeapi.RuntimeServiceClient) error {
		_, err := rt.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
		return err
	}},
}

// scalePoint is what BenchmarkCompareScale measures at one number of pods.
type scalePoint struct {
	pods int
	// list is each List call's p50 in ms; absent when the runtime does
	// not implement the call.
	list      map[string]float64
	daemonMiB float64
	// addPerSec is the rate the pods since the last point were made at.
	addPerSec float64
}

// BenchmarkCompareScale grows husk's and then containerd's pods, of 2
// busybox `sleep` containers each, made by 4 workers, to 10, 50, 100 and
// 250 (HUSK_SCALE_MAX stops earlier), and at each size measures the p50 of
// 20 calls of each List kubelet polls and the daemon's RSS. At the largest
// size it measures the CPU the runtime uses under kubelet-like polling
// (HUSK_SCALE_IDLE seconds, 30 unless set), then SIGKILLs the daemon and
// measures the time until it answers again and until it lists every pod
// Ready. Run with -benchtime 1x.
func BenchmarkCompareScale(b *testing.B) {
	husk, ctrd := compareTargets(b)
	var report, csv strings.Builder
	csv.WriteString("runtime,pods,metric,value\n")
	for _, t := range []*criTarget{husk, ctrd} {
		// HUSK_COMPARE_ONLY=husk measures one runtime, to try a change.
		if only := os.Getenv("HUSK_COMPARE_ONLY"); only != "" && only != t.name {
			continue
		}
		points, pods := scaleCurve(b, t)
		fmt.Fprintf(&report, "%s\n| pods | pods/s to reach | daemon RSS MiB |", t.name)
		for _, lc := range listCalls {
			fmt.Fprintf(&report, " %s ms |", lc.name)
		}
		report.WriteString("\n|---|---|---|---|---|---|---|---|\n")
		for _, p := range points {
			fmt.Fprintf(&report, "| %d | %.1f | %.1f |", p.pods, p.addPerSec, p.daemonMiB)
			fmt.Fprintf(&csv, "%s,%d,daemon_rss_mib,%.2f\n", t.name, p.pods, p.daemonMiB)
			for _, lc := range listCalls {
				v, ok := p.list[lc.name]
				if !ok {
					report.WriteString(" unimplemented |")
					continue
				}
				fmt.Fprintf(&report, " %.2f |", v)
				fmt.Fprintf(&csv, "%s,%d,%s_ms,%.3f\n", t.name, p.pods, lc.name, v)
			}
			report.WriteString("\n")
		}
		report.WriteString(idleAndRecovery(b, t, pods))
		report.WriteString("\n")
		t0 := time.Now()
		removeComparePods(b, t, pods)
		fmt.Fprintf(&report, "%s: stopping and removing %d pods one after the other: %.1f s\n\n", t.name, len(pods), time.Since(t0).Seconds())
	}
	compareReport(b, "scale.txt", report.String())
	if dir := os.Getenv("HUSK_BENCH_OUT"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, "scale.csv"), []byte(csv.String()), 0o644); err != nil {
			b.Error(err)
		}
	}
}

// scaleCurve grows t's pods size by size and measures each point.
func scaleCurve(b *testing.B, t *criTarget) ([]scalePoint, []*comparePod) {
	maxPods := envInt("HUSK_SCALE_MAX", 250)
	var points []scalePoint
	var pods []*comparePod
	for _, size := range []int{10, 50, 100, 250} {
		size = min(size, maxPods)
		if size <= len(pods) {
			break
		}
		more, took := podsByWorkers(b, t, fmt.Sprintf("scale%d", size), size-len(pods), 4, 2)
		pods = append(pods, more...)
		p := scalePoint{pods: size, list: map[string]float64{}, addPerSec: float64(len(more)) / took.Seconds()}
		// The pods' first seconds (their monitors' and shims' setup) aside.
		time.Sleep(2 * time.Second)
		for _, lc := range listCalls {
			var lat []time.Duration
			// 20 calls, or fewer when they take seconds each (containerd's
			// stats at 250 pods): at least 3, for at most 30 s.
			begin := time.Now()
			for i := 0; i < 20 && (i < 3 || time.Since(begin) < 30*time.Second); i++ {
				t0 := time.Now()
				err := lc.call(context.Background(), t.rt)
				if status.Code(err) == codes.Unimplemented {
					break
				}
				if err != nil {
					b.Fatalf("%s: %s at %d pods: %v", t.name, lc.name, size, err)
				}
				lat = append(lat, time.Since(t0))
			}
			if len(lat) > 0 {
				p.list[lc.name] = ms(percentile(lat, 0.5))
			}
		}
		p.daemonMiB = procKiB(t.pid(), "status", "VmRSS") / 1024
		points = append(points, p)
	}
	return points, pods
}

// idleAndRecovery measures, with every pod running, the runtime's CPU
// under kubelet-like polling, then a SIGKILL of the daemon and the time
// until it answers and lists every pod Ready again.
func idleAndRecovery(b *testing.B, t *criTarget, pods []*comparePod) string {
	idle := time.Duration(envInt("HUSK_SCALE_IDLE", 30)) * time.Second
	helpers := runtimeHelpers(t)
	daemon0, helpers0 := cpuTicks(t.pid()), sumTicks(helpers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { kubeletPolling(t, stop) })
	time.Sleep(idle)
	close(stop)
	wg.Wait()
	// USER_HZ is 100 on Linux.
	daemonCPU := float64(cpuTicks(t.pid())-daemon0) / 100 / idle.Seconds() * 100
	helperCPU := float64(sumTicks(helpers)-helpers0) / 100 / idle.Seconds() * 100

	t.kill()
	t0 := time.Now()
	t.start()
	t.dial(b)
	first := waitAnswer(b, t)
	for {
		list, err := t.rt.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{
			Filter: &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}})
		if err == nil && len(list.Items) == len(pods) {
			break
		}
		if time.Since(t0) > 5*time.Minute {
			b.Fatalf("%s: not every pod Ready 5 minutes after a restart: %v", t.name, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	allReady := time.Since(t0)
	return fmt.Sprintf("%s at %d pods: CPU under kubelet-like polling (%s): daemon %.2f%%, its %d shims/monitors/inits %.2f%% of one core\n"+
		"%s after SIGKILL at %d pods: first answer %.0f ms, every pod Ready %.0f ms after the restart\n",
		t.name, len(pods), idle, daemonCPU, len(helpers), helperCPU, t.name, len(pods), ms(first), ms(allReady))
}

// kubeletPolling calls what kubelet does with this many pods: the relist
// every second, the stats every 10 s.
func kubeletPolling(t *criTarget, stop chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 0; ; n++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for i, lc := range listCalls {
			if i < 2 || n%10 == 0 {
				_ = lc.call(ctx, t.rt)
			}
		}
		cancel()
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// runtimeHelpers are the processes the runtime keeps for its pods:
// husk's monitors and pod inits, containerd's shims.
func runtimeHelpers(t *criTarget) []int {
	var pids []int
	for pid := range procSnapshot() {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		switch strings.TrimSpace(string(comm)) {
		case "husk-monitor", "husk-pod-init":
			if t.name == "husk" {
				pids = append(pids, pid)
			}
		case "containerd-shim":
			if t.name == "containerd" {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func sumTicks(pids []int) int64 {
	var n int64
	for _, pid := range pids {
		n += cpuTicks(pid)
	}
	return n
}
