package image

import (
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// BenchmarkStorePull50MB is BenchmarkPullImage50MB of test/e2e without the
// daemon, for profiling the store itself.
func BenchmarkStorePull50MB(b *testing.B) {
	const layerBytes = 50 << 20 / 3
	reg := imagetest.NewRegistry(b)
	img := imagetest.Image(b, v1.Config{},
		imagetest.RandomFilesLayer(b, 11, layerBytes, 40),
		imagetest.RandomFilesLayer(b, 12, layerBytes, 40),
		imagetest.RandomFilesLayer(b, 13, layerBytes, 40),
	)
	reg.Push(b, "bench/pull:1", img)
	var total int64
	layers, _ := img.Layers()
	for _, l := range layers {
		n, _ := l.Size()
		total += n
	}
	s, err := Open(filepath.Join(b.TempDir(), "images"), Options{Registries: insecure(reg.Host)})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	b.SetBytes(total)
	for b.Loop() {
		got, err := s.Pull(b.Context(), reg.Ref("bench/pull:1"), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Remove(got.ID); err != nil {
			b.Fatal(err)
		}
		s.removing.Wait()
		b.StartTimer()
	}
}
