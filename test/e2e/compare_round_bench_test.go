package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// compareMetric is a row of BenchmarkCompare's table.
type compareMetric struct{ key, label, unit string }

var compareMetrics = []compareMetric{
	{"run", "RunPodSandbox", "ms"},
	{"create", "CreateContainer", "ms"},
	{"start", "StartContainer", "ms"},
	{"ready", "pod ready (run+create+start)", "ms"},
	{"stop", "StopPodSandbox (running container)", "ms"},
	{"remove", "RemovePodSandbox", "ms"},
	{"exec", "ExecSync `true`", "ms"},
	{"par", "20 pods by 4 workers", "pods/s"},
	{"rss1", "RSS per running pod (shared PID ns, 1 container)", "MiB"},
	{"pss1", "PSS per running pod (shared PID ns, 1 container)", "MiB"},
	{"rss3", "RSS per running pod (shared PID ns, 3 containers)", "MiB"},
	{"pss3", "PSS per running pod (shared PID ns, 3 containers)", "MiB"},
}

// BenchmarkCompare runs the same workloads against husk and containerd,
// alternately, HUSK_COMPARE_ROUNDS times (3 unless set), and prints the
// median over the rounds of each figure: the p50 of 20 pods made one
// after the other (RunPodSandbox, CreateContainer and StartContainer of a
// busybox `sleep`, ExecSync `true` in it, StopPodSandbox with it running,
// RemovePodSandbox), 20 pods by 4 workers, and the memory a running pod
// costs (the processes the runtime starts for it, the pod's own `sleep`s
// aside, plus what the daemon grew by). Run with -benchtime 1x.
func BenchmarkCompare(b *testing.B) {
	husk, ctrd := compareTargets(b)
	rounds := envInt("HUSK_COMPARE_ROUNDS", 3)
	results := map[string][]map[string]float64{}
	var raw strings.Builder
	for r := range rounds {
		order := []*criTarget{husk, ctrd}
		if r%2 == 1 {
			order = []*criTarget{ctrd, husk}
		}
		for _, t := range order {
			m := compareRound(b, t, r)
			results[t.name] = append(results[t.name], m)
			fmt.Fprintf(&raw, "round %d %-10s", r+1, t.name)
			for _, cm := range compareMetrics {
				fmt.Fprintf(&raw, " %s=%.2f", cm.key, m[cm.key])
			}
			raw.WriteString("\n")
		}
	}
	compareReport(b, "compare.txt", raw.String()+"\n"+compareTable(results, rounds))
}

func compareTable(results map[string][]map[string]float64, rounds int) string {
	var s strings.Builder
	fmt.Fprintf(&s, "median of %d rounds | husk | containerd 1.6.20 | husk/containerd\n|---|---|---|---|\n", rounds)
	for _, cm := range compareMetrics {
		var h, c []float64
		for _, m := range results["husk"] {
			h = append(h, m[cm.key])
		}
		for _, m := range results["containerd"] {
			c = append(c, m[cm.key])
		}
		hm, cmed := median(h), median(c)
		fmt.Fprintf(&s, "| %s | %.2f %s | %.2f %s | %.2f |\n", cm.label, hm, cm.unit, cmed, cm.unit, hm/cmed)
	}
	return s.String()
}

// compareRound measures one round of BenchmarkCompare on one runtime.
func compareRound(b *testing.B, t *criTarget, round int) map[string]float64 {
	prefix := fmt.Sprintf("r%d", round)
	warm := newComparePod(b, t, prefix+"-warm", runtimeapi.NamespaceMode_CONTAINER, 1)
	warm.remove(b, t)

	var run, create, start, ready, stop, remove, execs []time.Duration
	for i := range 20 {
		p := newComparePod(b, t, fmt.Sprintf("%s-seq-%d", prefix, i), runtimeapi.NamespaceMode_CONTAINER, 1)
		run, create, start = append(run, p.run), append(create, p.create), append(start, p.start)
		ready = append(ready, p.run+p.create+p.start)
		t0 := time.Now()
		resp, err := t.rt.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: p.containers[0], Cmd: []string{"true"}, Timeout: 10})
		if err != nil || resp.ExitCode != 0 {
			b.Fatalf("%s: ExecSync true: %v (exit %d)", t.name, err, resp.GetExitCode())
		}
		execs = append(execs, time.Since(t0))
		s, r := p.remove(b, t)
		stop, remove = append(stop, s), append(remove, r)
	}
	m := map[string]float64{}
	for key, d := range map[string][]time.Duration{"run": run, "create": create, "start": start, "ready": ready, "stop": stop, "remove": remove, "exec": execs} {
		m[key] = ms(percentile(d, 0.5))
	}
	pods, took := podsByWorkers(b, t, prefix+"-par", 20, 4, 1)
	m["par"] = 20 / took.Seconds()
	removeComparePods(b, t, pods)
	m["rss1"], m["pss1"] = podMemory(b, t, prefix+"-mem1", 1)
	m["rss3"], m["pss3"] = podMemory(b, t, prefix+"-mem3", 3)
	return m
}

// podMemory makes 20 pods of `containers` containers with a shared PID
// namespace and returns what each costs in RSS and PSS, in MiB.
func podMemory(b *testing.B, t *criTarget, prefix string, containers int) (float64, float64) {
	const n = 20
	before := procSnapshot()
	pid := t.pid()
	rss0, pss0 := procKiB(pid, "status", "VmRSS"), procKiB(pid, "smaps_rollup", "Pss")
	var pods []*comparePod
	for i := range n {
		pods = append(pods, newComparePod(b, t, fmt.Sprintf("%s-%d", prefix, i), runtimeapi.NamespaceMode_POD, containers))
	}
	// What a process touches as it settles (its first event loop) is
	// part of its cost.
	time.Sleep(time.Second)
	rss, pss, _ := helperMemory(before)
	rss += procKiB(pid, "status", "VmRSS") - rss0
	pss += procKiB(pid, "smaps_rollup", "Pss") - pss0
	removeComparePods(b, t, pods)
	return rss / n / 1024, pss / n / 1024
}
