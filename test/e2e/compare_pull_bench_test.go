package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kpgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// pullLayers and pullLayerBytes make the image of BenchmarkComparePull:
// 1 GiB of files in 10 layers (HUSK_PULL_MIB changes the total).
const pullLayers = 10

// bigLayerTar is a layer's tar of files whose bytes are drawn from 16
// letters: about half compressible, as a binary or a text file is, and
// cheap to make.
func bigLayerTar(b *testing.B, seed uint64, size int) []byte {
	const fileSize = 8 << 20
	r := rand.New(rand.NewPCG(seed, seed))
	var entries []imagetest.Entry
	for i := 0; size > 0; i++ {
		n := min(fileSize, size)
		data := make([]byte, n)
		for j := 0; j < n; j += 8 {
			v := r.Uint64()
			for k := 0; k < 8 && j+k < n; k++ {
				data[j+k] = "abcdefghijklmnop"[(v>>(4*k))&15]
			}
		}
		entries = append(entries, imagetest.Entry{Name: fmt.Sprintf("data/%d-%d", seed, i), Content: data})
		size -= n
	}
	return imagetest.TarBytes(b, entries...)
}

func compressLayer(b *testing.B, tarBytes []byte, algo string) v1.Layer {
	var buf bytes.Buffer
	var w io.WriteCloser
	mt := types.OCILayer
	switch algo {
	case "gzip":
		zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		if err != nil {
			b.Fatal(err)
		}
		w = zw
	case "zstd":
		zw, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			b.Fatal(err)
		}
		w, mt = zw, types.OCILayerZStd
	}
	if _, err := w.Write(tarBytes); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	return imagetest.CompressedLayer(tarBytes, buf.Bytes(), mt)
}

// BenchmarkComparePull pulls an image of 1 GiB in 10 layers, gzip and
// then zstd, from the registry on 127.0.0.1 into husk and into containerd
// (both unpack it: containerd into its overlayfs snapshotter), alternately,
// three times each, the image removed before each pull; and measures what one
// core of this machine does: SHA-256, gzip and zstd decompression. The
// registry runs in this process, on the same 2 cores. Run with
// -benchtime 1x.
func BenchmarkComparePull(b *testing.B) {
	husk, ctrd, reg := compareEnv(b)
	total := envInt("HUSK_PULL_MIB", 1024) << 20
	tars := make([][]byte, pullLayers)
	for i := range tars {
		tars[i] = bigLayerTar(b, uint64(i+1), total/pullLayers)
	}
	var report strings.Builder
	fmt.Fprintf(&report, "| layers | compressed MiB | husk s (MB/s) | containerd s (MB/s) | husk/containerd time |\n|---|---|---|---|---|\n")
	for _, algo := range []string{"gzip", "zstd"} {
		var layers []v1.Layer
		var compressed int64
		for _, t := range tars {
			l := compressLayer(b, t, algo)
			n, _ := l.Size()
			compressed += n
			layers = append(layers, l)
		}
		ref := reg.Ref("big:" + algo)
		reg.Push(b, "big:"+algo, imagetest.Image(b, v1.Config{}, layers...))
		times := map[string][]float64{}
		for r := range 3 {
			order := []*criTarget{husk, ctrd}
			if r%2 == 1 {
				order = []*criTarget{ctrd, husk}
			}
			for _, t := range order {
				times[t.name] = append(times[t.name], pullOnce(b, t, ref).Seconds())
			}
		}
		// Gone before the next image, whose layers have the same diffIDs:
		// a runtime that still had them unpacked would pull nothing.
		for _, t := range []*criTarget{husk, ctrd} {
			removeImage(b, t, ref)
		}
		h, c := median(times["husk"]), median(times["containerd"])
		mb := float64(compressed) / 1e6
		fmt.Fprintf(&report, "| 10 %s | %.0f | %.2f (%.0f) | %.2f (%.0f) | %.2f |\n", algo, float64(compressed)/(1<<20), h, mb/h, c, mb/c, h/c)
		fmt.Fprintf(&report, "  (each pull: husk %v s, containerd %v s)\n", times["husk"], times["containerd"])
	}
	report.WriteString(coreLimits(b, tars[0]))
	compareReport(b, "pull.txt", report.String())
}

// pullOnce removes ref from t, then pulls it and returns how long that took.
func pullOnce(b *testing.B, t *criTarget, ref string) time.Duration {
	removeImage(b, t, ref)
	t0 := time.Now()
	img := runtimeapi.NewImageServiceClient(t.conn)
	if _, err := img.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		b.Fatalf("%s: PullImage %s: %v", t.name, ref, err)
	}
	return time.Since(t0)
}

func removeImage(b *testing.B, t *criTarget, ref string) {
	img := runtimeapi.NewImageServiceClient(t.conn)
	if _, err := img.RemoveImage(context.Background(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		b.Fatalf("%s: RemoveImage %s: %v", t.name, ref, err)
	}
}

// coreLimits measures one core's SHA-256 and decompression rates on one
// layer: what a pull of that layer cannot go faster than on one core.
// husk decompresses with klauspost/compress; containerd 1.6 with Go's
// compress/gzip (or unpigz, which Debian's containerd does not pull in).
func coreLimits(b *testing.B, tarBytes []byte) string {
	rate := func(f func(io.Reader) (io.Reader, error), l v1.Layer) float64 {
		raw, err := l.Compressed()
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		r, err := f(raw)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
		return float64(len(tarBytes)) / 1e6 / time.Since(t0).Seconds()
	}
	t0 := time.Now()
	_ = sha256.Sum256(tarBytes)
	sum := float64(len(tarBytes)) / 1e6 / time.Since(t0).Seconds()
	gz, zs := compressLayer(b, tarBytes, "gzip"), compressLayer(b, tarBytes, "zstd")
	stdGzip := rate(func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }, gz)
	kpGzip := rate(func(r io.Reader) (io.Reader, error) { return kpgzip.NewReader(r) }, gz)
	kpZstd := rate(func(r io.Reader) (io.Reader, error) {
		return zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	}, zs)
	return fmt.Sprintf("one core, MB/s of uncompressed data: sha256 %.0f; gzip: Go's compress/gzip %.0f, klauspost %.0f; zstd (klauspost) %.0f\n", sum, stdGzip, kpGzip, kpZstd)
}
