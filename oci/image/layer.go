package image

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/moby/go-archive"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/husk-runtime/husk/internal/metrics"
	"github.com/husk-runtime/husk/internal/procfs"
)

type layerMeta struct {
	DiffID digest.Digest `json:"diffID"`
	Size   uint64        `json:"size"`
	Inodes uint64        `json:"inodes"`
	// BootID is the kernel boot the layer was written in (see durable.go).
	BootID string `json:"bootID"`
}

func readLayerMeta(dir string) (layerMeta, error) {
	var m layerMeta
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return m, err
	}
	err = json.Unmarshal(b, &m)
	return m, err
}

func (s *Store) hasLayer(diffID digest.Digest) (layerMeta, bool) {
	m, err := readLayerMeta(s.layerDir(diffID))
	return m, err == nil
}

// errRead marks an error of the stream a layer was read from (network,
// registry), as opposed to what the layer held.
type errRead struct{ err error }

func (e errRead) Error() string { return e.err.Error() }
func (e errRead) Unwrap() error { return e.err }

type readTracker struct {
	r   io.Reader
	err error
}

func (t *readTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
		err = errRead{err}
	}
	return n, err
}

// unpackLayer reads a (compressed) layer blob once: it checks the blob
// against its digest and size, decompresses it, checks the tar against the
// diffID and unpacks it into layers/<diffID>/fs. All of it happens in one
// pass over the stream, so a layer is never written to disk twice. The
// layer becomes visible only once it has passed every check.
func (s *Store) unpackLayer(ctx context.Context, blob digest.Digest, size int64, diffID digest.Digest, rc io.ReadCloser) (err error) {
	defer func() { _ = rc.Close() }()
	if diffID.Algorithm() != digest.SHA256 || blob.Algorithm() != digest.SHA256 {
		return fmt.Errorf("layer %s: only sha256 digests are supported: %w", blob, errdefs.ErrNotImplemented)
	}
	tmp, err := os.MkdirTemp(s.tmpDir(), "layer-")
	if err != nil {
		return err
	}
	defer func() {
		if tmp != "" {
			_ = os.RemoveAll(tmp)
		}
	}()
	fsDir := filepath.Join(tmp, "fs")
	if err := os.Mkdir(fsDir, 0o755); err != nil {
		return err
	}

	tracker := &readTracker{r: rc}
	blobDigester := digest.SHA256.Digester()
	counted := &countingReader{r: io.TeeReader(tracker, blobDigester.Hash())}
	defer func() { metrics.ImagePullBytes.Add(float64(counted.n)) }()
	buffered := bufio.NewReaderSize(counted, 128<<10)
	tarStream, closeDec, err := decompress(buffered)
	if err != nil {
		return s.layerError(ctx, blob, tracker, err)
	}
	defer closeDec()
	diffDigester := digest.SHA256.Digester()
	tarTee := io.TeeReader(tarStream, diffDigester.Hash())

	err = archive.Unpack(tarTee, fsDir, &archive.TarOptions{WhiteoutFormat: archive.OverlayWhiteoutFormat})
	if err == nil {
		// The tar's end-of-archive blocks and any padding count for the digests.
		_, err = io.Copy(io.Discard, tarTee)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, buffered)
	}
	if err != nil {
		return s.layerError(ctx, blob, tracker, err)
	}
	if got := blobDigester.Digest(); got != blob {
		return fmt.Errorf("layer %s: content has digest %s: %w", blob, got, errdefs.ErrDataLoss)
	}
	if size >= 0 && counted.n != size {
		return fmt.Errorf("layer %s: manifest says %d bytes, registry sent %d: %w", blob, size, counted.n, errdefs.ErrDataLoss)
	}
	if got := diffDigester.Digest(); got != diffID {
		return fmt.Errorf("layer %s: uncompressed content has digest %s, the image config says %s: %w", blob, got, diffID, errdefs.ErrDataLoss)
	}

	meta, err := measure(fsDir)
	if err != nil {
		return fmt.Errorf("layer %s: %w", blob, err)
	}
	meta.DiffID = diffID
	meta.BootID = procfs.BootID()
	b, _ := json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(tmp, "meta.json"), b, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o711); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.layerDir(diffID)); err != nil {
		if _, ok := s.hasLayer(diffID); ok {
			return nil // an abandoned, concurrent unpack of the same layer won
		}
		return fmt.Errorf("layer %s: %w", blob, err)
	}
	tmp = ""
	s.scheduleSync(diffID)
	return nil
}

func (s *Store) layerError(ctx context.Context, blob digest.Digest, t *readTracker, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("layer %s: %w", blob, ctx.Err())
	}
	var re errRead
	if t.err != nil || errors.As(err, &re) {
		if t.err != nil {
			err = t.err
		}
		// go-containerregistry checks blobs as it streams them and keeps
		// its error type internal; its message is all there is to go by.
		if strings.HasPrefix(err.Error(), "error verifying") {
			return fmt.Errorf("layer %s: %v: %w", blob, err, errdefs.ErrDataLoss)
		}
		return fmt.Errorf("layer %s: reading from registry: %v: %w", blob, err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("layer %s is not a valid layer: %v: %w", blob, err, errdefs.ErrDataLoss)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// decompress looks at the first bytes rather than the manifest's media
// type, as registries and image builders get the latter wrong.
func decompress(r *bufio.Reader) (io.Reader, func(), error) {
	head, err := r.Peek(4)
	if err != nil && err != io.EOF {
		return nil, nil, err
	}
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return zr, func() { _ = zr.Close() }, nil
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	default:
		return r, func() {}, nil
	}
}

func measure(dir string) (layerMeta, error) {
	var m layerMeta
	// A file of several hard links is one file on disk: counted once (an
	// image of busybox's applets as links of one binary is not 300 of it).
	linked := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			m.Inodes++
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			if linked[st.Ino] {
				return nil
			}
			linked[st.Ino] = true
		}
		m.Inodes++
		m.Size += uint64(info.Size())
		return nil
	})
	return m, err
}

func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	return unix.Syncfs(int(f.Fd()))
}
