package image

import (
	"path/filepath"
	"testing"

	"github.com/husk-runtime/husk/test/imagetest"
)

// BenchmarkStorePull50MB is BenchmarkPullImage50MB of test/e2e without the
// daemon, for profiling the store itself.
func BenchmarkStorePull50MB(b *testing.B) {
	reg := imagetest.NewRegistry(b)
	total := imagetest.PullBenchImage(b, reg, "bench/pull:1")
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
