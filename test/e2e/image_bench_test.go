package e2e

import (
	"context"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// BenchmarkPullImage50MB pulls a 3-layer image of about 50 MB (random,
// incompressible content) from a loopback registry into an empty store,
// through the daemon's socket. Each iteration starts from an empty store:
// the image is removed, and its layers with it, outside the timed part.
// Run with: make bench (see docs/benchmarks.md).
func BenchmarkPullImage50MB(b *testing.B) {
	reg := imagetest.NewRegistry(b)
	total := imagetest.PullBenchImage(b, reg, "bench/pull:1")
	d := newDaemon(b, insecureConfig(reg.Host))
	ref := reg.Ref("bench/pull:1")
	ctx := context.Background()
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := d.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, err := d.images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: resp.ImageRef}}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Seconds())/float64(b.N), "s/pull")
}
