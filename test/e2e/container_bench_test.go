package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// monitorsRSS adds up the resident memory of the daemon's container
// monitors.
func monitorsRSS(b *testing.B, root string) (float64, int) {
	procs, _ := os.ReadDir("/proc")
	var total float64
	n := 0
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !strings.Contains(string(cmdline), "monitor\x00--state\x00"+root) {
			continue
		}
		total += rssKiB(b, pid)
		n++
	}
	return total, n
}

// busyboxDaemon is a daemon with a pod network and a busybox image pulled,
// whose reference it returns.
func busyboxDaemon(b *testing.B) (*daemon, string) {
	reg := imagetest.NewRegistry(b)
	reg.Push(b, "busybox:bench", imagetest.BusyboxImage(b, v1.Config{}))
	d := newDaemon(b, insecureConfig(reg.Host))
	newPodNet(b, d).install(b, d)
	ref := reg.Ref("busybox:bench")
	if _, err := d.images.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		b.Fatal(err)
	}
	return d, ref
}

// BenchmarkContainerStart measures CreateContainer and StartContainer over
// gRPC (busybox `sleep`, kubelet's default per-container PID namespace),
// the time from RunPodSandbox to a running container, and the memory a
// running pod with one container costs: its monitor, and what the daemon
// holds for it. Run with -benchtime 1x; see docs/benchmarks.md.
func BenchmarkContainerStart(b *testing.B) {
	d, ref := busyboxDaemon(b)
	ctx := context.Background()
	ctr := func(name string) *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: name},
			Image:    &runtimeapi.ImageSpec{Image: ref},
			Command:  []string{"sleep", "600"},
			Linux:    &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}}},
		}
	}
	createStart := func(podID string, pod *runtimeapi.PodSandboxConfig, name string) (time.Duration, time.Duration) {
		t0 := time.Now()
		resp, err := d.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: ctr(name), SandboxConfig: pod})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := d.runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
			b.Fatal(err)
		}
		return t1.Sub(t0), time.Since(t1)
	}
	for i := 0; i < b.N; i++ {
		pod := podConfig(fmt.Sprintf("bench-%d", i))
		podResp, err := d.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
		if err != nil {
			b.Fatal(err)
		}
		createStart(podResp.PodSandboxId, pod, "warm")
		var creates, starts, both []time.Duration
		for j := range 50 {
			c, s := createStart(podResp.PodSandboxId, pod, fmt.Sprintf("c%d", j))
			creates, starts, both = append(creates, c), append(starts, s), append(both, c+s)
		}
		b.ReportMetric(ms(percentile(creates, 0.5)), "create-p50-ms")
		b.ReportMetric(ms(percentile(starts, 0.5)), "start-p50-ms")
		b.ReportMetric(ms(percentile(both, 0.5)), "create+start-p50-ms")
		b.ReportMetric(ms(percentile(both, 0.9)), "create+start-p90-ms")
		rss, n := monitorsRSS(b, d.root)
		b.ReportMetric(rss/float64(n), "monitor-KiB/container")
		if _, err := d.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podResp.PodSandboxId}); err != nil {
			b.Fatal(err)
		}

		// From RunPodSandbox to a running container, and what each such
		// pod costs in memory.
		var toRunning, runs, fullStarts []time.Duration
		var pods []string
		daemonBefore := rssKiB(b, d.cmd.Process.Pid)
		for j := range 50 {
			pod := podConfig(fmt.Sprintf("full-%d-%d", i, j))
			t0 := time.Now()
			resp, err := d.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
			if err != nil {
				b.Fatal(err)
			}
			runs = append(runs, time.Since(t0))
			c, s := createStart(resp.PodSandboxId, pod, "app")
			fullStarts = append(fullStarts, c+s)
			toRunning = append(toRunning, time.Since(t0))
			pods = append(pods, resp.PodSandboxId)
		}
		daemonAfter := rssKiB(b, d.cmd.Process.Pid)
		rss, n = monitorsRSS(b, d.root)
		b.ReportMetric(ms(percentile(runs, 0.5)), "pod-run-p50-ms")
		b.ReportMetric(ms(percentile(fullStarts, 0.5)), "pod-create+start-p50-ms")
		b.ReportMetric(ms(percentile(toRunning, 0.5)), "pod-to-running-p50-ms")
		b.ReportMetric(ms(percentile(toRunning, 0.9)), "pod-to-running-p90-ms")
		b.ReportMetric((rss+daemonAfter-daemonBefore)/float64(n)/1024, "MiB/pod-with-1-container")
		for _, id := range pods {
			if _, err := d.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkContainerExitEvent measures the time from a container's exit
// (the finish time its monitor records) to its stopped event reaching a
// GetContainerEvents client, over 100 containers (busybox `sleep 0.1`)
// started one after another in one pod. Run with -benchtime 1x; see
// docs/benchmarks.md.
func BenchmarkContainerExitEvent(b *testing.B) {
	d, ref := busyboxDaemon(b)
	ctx := context.Background()
	stream, err := d.runtime.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		pod := podConfig(fmt.Sprintf("exits-%d", i))
		podResp, err := d.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
		if err != nil {
			b.Fatal(err)
		}
		var lat []time.Duration
		for j := range 100 {
			cfg := ctrConfig(fmt.Sprintf("c%d", j), &runtimeapi.ImageSpec{Image: ref}, "sleep", "0.1")
			cfg.LogPath = ""
			resp, err := d.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podResp.PodSandboxId, Config: cfg, SandboxConfig: pod})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := d.runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
				b.Fatal(err)
			}
			for {
				e, err := stream.Recv()
				if err != nil {
					b.Fatal(err)
				}
				if e.ContainerId != resp.ContainerId || e.ContainerEventType != runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT {
					continue
				}
				got := time.Now()
				for _, c := range e.ContainersStatuses {
					if c.Id == resp.ContainerId {
						lat = append(lat, got.Sub(time.Unix(0, c.FinishedAt)))
					}
				}
				break
			}
		}
		b.ReportMetric(ms(percentile(lat, 0.5)), "exit-to-event-p50-ms")
		b.ReportMetric(ms(percentile(lat, 0.9)), "exit-to-event-p90-ms")
		if _, err := d.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podResp.PodSandboxId}); err != nil {
			b.Fatal(err)
		}
	}
}
