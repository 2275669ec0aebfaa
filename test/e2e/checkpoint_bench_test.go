package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// hogSource holds MiB of memory written with a pattern (pages CRIU must
// save), says so, and waits.
const hogSource = `#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
	size_t n = (size_t)atol(argv[1]) << 20;
	unsigned long *p = malloc(n), x = 88172645463325252UL;
	for (size_t i = 0; i < n / sizeof *p; i++) {
		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		p[i] = x;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
`

// BenchmarkCheckpoint checkpoints a container holding 10 MiB and one
// holding 500 MiB of resident memory, and restores each in a new pod:
// the time of CheckpointContainer, of the restore (CreateContainer from
// the archive and StartContainer), and the archive's size.
func BenchmarkCheckpoint(b *testing.B) {
	reg := imagetest.NewRegistry(b)
	reg.Push(b, "hog:bench", hogImage(b))
	d := newDaemon(b, insecureConfig(reg.Host))
	newPodNet(b, d).install(b, d)
	ref := reg.Ref("hog:bench")
	if _, err := d.images.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		b.Fatal(err)
	}
	for _, mib := range []int{10, 500} {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			var ckpt, restore time.Duration
			var size int64
			for i := range b.N {
				c, r, s := checkpointRound(b, d, ref, mib, i)
				ckpt, restore, size = ckpt+c, restore+r, s
			}
			b.ReportMetric(float64(ckpt.Milliseconds())/float64(b.N), "checkpoint-ms")
			b.ReportMetric(float64(restore.Milliseconds())/float64(b.N), "restore-ms")
			b.ReportMetric(float64(size)/(1<<20), "archive-MiB")
		})
	}
}

// checkpointRound runs a hog, checkpoints it, restores it in another pod
// and removes both pods.
func checkpointRound(b *testing.B, d *daemon, ref string, mib, i int) (ckpt, restore time.Duration, size int64) {
	ctx := context.Background()
	logs := b.TempDir()
	pod := func(name string) (string, *runtimeapi.PodSandboxConfig) {
		cfg := podConfig(fmt.Sprintf("%s-%d-%d", name, mib, i))
		cfg.LogDirectory = filepath.Join(logs, name)
		return runPod(b, d, cfg), cfg
	}
	podA, cfgA := pod("hog")
	defer func() { stopPod(b, d, podA); removePod(b, d, podA) }()
	cfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "hog"}, Image: &runtimeapi.ImageSpec{Image: ref},
		Args: []string{fmt.Sprint(mib)}, LogPath: "hog.log"}
	resp, err := d.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podA, Config: cfg, SandboxConfig: cfgA})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := d.runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
		b.Fatal(err)
	}
	waitReady(b, filepath.Join(logs, "hog", "hog.log"))
	archive := filepath.Join(b.TempDir(), "hog.tar")
	t0 := time.Now()
	if _, err := d.runtime.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: resp.ContainerId, Location: archive}); err != nil {
		b.Fatal(err)
	}
	ckpt = time.Since(t0)
	fi, err := os.Stat(archive)
	if err != nil {
		b.Fatal(err)
	}
	podB, cfgB := pod("restored")
	defer func() { stopPod(b, d, podB); removePod(b, d, podB) }()
	t1 := time.Now()
	rc, err := d.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podB, SandboxConfig: cfgB,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "hog"}, Image: &runtimeapi.ImageSpec{Image: archive}, LogPath: "hog.log"}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := d.runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: rc.ContainerId}); err != nil {
		b.Fatal(err)
	}
	restore = time.Since(t1)
	if st, err := d.runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: rc.ContainerId}); err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		b.Fatalf("restored hog: %v, %v", st, err)
	}
	return ckpt, restore, fi.Size()
}

func waitReady(b *testing.B, log string) {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(log); err == nil && strings.Contains(string(data), " ready") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatal("the hog did not get ready")
}

func hogImage(b *testing.B) v1.Image { return staticCImage(b, "hog", hogSource) }
