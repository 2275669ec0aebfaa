// Package imagetest builds real OCI images from real tar entries and serves them
// from an in-process registry on 127.0.0.1 over plain HTTP, with request
// counters and fault injection. It exists so that the image store unit tests
// and the daemon end-to-end tests exercise the same code paths a real pull
// does (manifest/index resolution, blob digests, gzip, auth challenges)
// without network access.
package imagetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is the mtime of every tar entry, so that building the same entries
// twice yields the same digests (tests pin digests across runs).
var epoch = time.Unix(1_700_000_000, 0).UTC()

// Entry is one tar entry of a layer, written exactly as given (so hostile
// entries such as "../../escape", "/abs", symlinks to "/", hardlinks to host
// paths can be expressed). Nothing is cleaned or validated.
type Entry struct {
	Name     string
	Type     byte  // tar.TypeReg (default when 0), tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, ...
	Mode     int64 // permission bits; default 0644 for files, 0755 for dirs, 0777 for symlinks
	Content  []byte
	Linkname string
	UID, GID int
	Xattrs   map[string]string // written as PAX SCHILY.xattr.* records

	// Devmajor and Devminor are used for tar.TypeChar and tar.TypeBlock.
	Devmajor, Devminor int64
}

// TarBytes returns an uncompressed tar stream holding entries in order.
func TarBytes(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{
			Name:     e.Name,
			Typeflag: e.Type,
			Mode:     e.Mode,
			Linkname: e.Linkname,
			Uid:      e.UID,
			Gid:      e.GID,
			ModTime:  epoch,
			Devmajor: e.Devmajor,
			Devminor: e.Devminor,
		}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Mode == 0 {
			switch hdr.Typeflag {
			case tar.TypeDir:
				hdr.Mode = 0o755
			case tar.TypeSymlink:
				hdr.Mode = 0o777
			default:
				hdr.Mode = 0o644
			}
		}
		// Only entries that carry data get a size; archive/tar refuses a
		// non-zero size on link/dir/device headers.
		if hdr.Typeflag == tar.TypeReg || len(e.Content) > 0 {
			hdr.Size = int64(len(e.Content))
		}
		if len(e.Xattrs) > 0 {
			hdr.Format = tar.FormatPAX
			hdr.PAXRecords = map[string]string{}
			for k, v := range e.Xattrs {
				hdr.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("imagetest: tar header %q: %v", e.Name, err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write(e.Content); err != nil {
				t.Fatalf("imagetest: tar content %q: %v", e.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("imagetest: tar close: %v", err)
	}
	return buf.Bytes()
}

// Layer returns a gzip-compressed layer (media type types.OCILayer; DockerImage
// rewrites it to the docker media type) holding entries.
func Layer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	return gzipLayer(t, TarBytes(t, entries...), gzip.DefaultCompression)
}

// GzipLayer is Layer for a tar stream built elsewhere (for example a tar
// modified by hand after TarBytes).
func GzipLayer(t testing.TB, tarBytes []byte) v1.Layer {
	t.Helper()
	return gzipLayer(t, tarBytes, gzip.DefaultCompression)
}

func gzipLayer(t testing.TB, tarBytes []byte, level int) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	// A zero gzip header (no name, no mtime) keeps digests reproducible.
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatalf("imagetest: gzip: %v", err)
	}
	if _, err := zw.Write(tarBytes); err != nil {
		t.Fatalf("imagetest: gzip: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("imagetest: gzip: %v", err)
	}
	return &memLayer{
		compressed:   buf.Bytes(),
		uncompressed: tarBytes,
		digest:       sha(buf.Bytes()),
		diffID:       sha(tarBytes),
		mediaType:    types.OCILayer,
	}
}

// CompressedLayer is a layer of a tar stream compressed elsewhere (a
// gzip level or zstd of the caller's choosing), served as compressed with
// media type mt.
func CompressedLayer(tarBytes, compressed []byte, mt types.MediaType) v1.Layer {
	return &memLayer{
		compressed:   compressed,
		uncompressed: tarBytes,
		digest:       sha(compressed),
		diffID:       sha(tarBytes),
		mediaType:    mt,
	}
}

// LayerFromBytes returns a layer whose compressed bytes are exactly raw and
// whose diffID is sha256(raw): what a registry would serve for a garbage or
// not-a-tar layer. Its Uncompressed() also returns raw, since there is
// nothing to decompress faithfully.
func LayerFromBytes(t testing.TB, raw []byte, mt types.MediaType) v1.Layer {
	t.Helper()
	return &memLayer{
		compressed:   raw,
		uncompressed: raw,
		digest:       sha(raw),
		diffID:       sha(raw),
		mediaType:    mt,
	}
}

// RandomFilesLayer returns a gzip layer of `files` regular files under
// "random/" holding totalBytes of incompressible, seed-determined content
// (for benchmarks: e.g. ~50 MB over 3 layers). Same seed, same digest.
func RandomFilesLayer(t testing.TB, seed int64, totalBytes int, files int) v1.Layer {
	t.Helper()
	if files < 1 {
		files = 1
	}
	var key [32]byte
	for i := range 8 {
		key[i] = byte(uint64(seed) >> (8 * i))
	}
	rng := rand.NewChaCha8(key)
	entries := make([]Entry, 0, files+1)
	entries = append(entries, Entry{Name: "random/", Type: tar.TypeDir})
	per := totalBytes / files
	for i := range files {
		n := per
		if i == files-1 {
			n = totalBytes - per*(files-1)
		}
		b := make([]byte, n)
		_, _ = rng.Read(b) // ChaCha8.Read never fails
		entries = append(entries, Entry{Name: fmt.Sprintf("random/file-%04d", i), Content: b})
	}
	// Random data does not compress; BestSpeed avoids burning CPU on trying.
	return gzipLayer(t, TarBytes(t, entries...), gzip.BestSpeed)
}

// memLayer is a fully in-memory v1.Layer. We do not use tarball.LayerFromOpener
// because it recompresses on every read (slow for 50 MB benchmark layers) and
// cannot express a layer whose bytes are not a valid gzip stream.
type memLayer struct {
	compressed, uncompressed []byte
	digest, diffID           v1.Hash
	mediaType                types.MediaType
}

func (l *memLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *memLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *memLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}
func (l *memLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.uncompressed)), nil
}
func (l *memLayer) Size() (int64, error)                { return int64(len(l.compressed)), nil }
func (l *memLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }

func sha(b []byte) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(b))}
}

// Image returns an OCI image (OCI manifest and config media types) for
// linux/<runtime.GOARCH> whose config carries cfg (Entrypoint, Cmd, Env, User,
// WorkingDir, StopSignal, ...) and the rootfs diff_ids of layers.
func Image(t testing.TB, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	return buildImage(t, false, cfg, layers)
}

// DockerImage is Image with docker schema2 media types; OCI gzip layers are
// advertised as docker gzip layers, other layer media types are kept.
func DockerImage(t testing.TB, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	return buildImage(t, true, cfg, layers)
}

func buildImage(t testing.TB, docker bool, cfg v1.Config, layers []v1.Layer) v1.Image {
	t.Helper()
	img := empty.Image
	if docker {
		img = mutate.MediaType(img, types.DockerManifestSchema2)
		img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	} else {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	adds := make([]mutate.Addendum, 0, len(layers))
	for _, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			t.Fatalf("imagetest: layer media type: %v", err)
		}
		if docker && mt == types.OCILayer {
			mt = types.DockerLayer
		}
		adds = append(adds, mutate.Addendum{Layer: l, MediaType: mt})
	}
	img, err := mutate.Append(img, adds...)
	if err != nil {
		t.Fatalf("imagetest: append layers: %v", err)
	}
	return setPlatform(t, img, v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, &cfg)
}

// setPlatform rewrites the config's os/architecture/variant (and Config when
// cfg is non-nil); this changes the image's digest.
func setPlatform(t testing.TB, img v1.Image, p v1.Platform, cfg *v1.Config) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("imagetest: config file: %v", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	if cfg != nil {
		cf.Config = *cfg
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatalf("imagetest: set config file: %v", err)
	}
	return img
}

// Index returns an image index keyed by platform ("linux/amd64",
// "linux/arm64/v8", ...). Each image's config os/architecture/variant is
// rewritten to match its key, as on a real multi-arch image, so its digest in
// the index differs from the digest of the image passed in. The index is an
// OCI index, or a docker manifest list when the images are docker schema2.
// Manifests are listed in sorted key order so digests are reproducible.
func Index(t testing.TB, imgs map[string]v1.Image) v1.ImageIndex {
	t.Helper()
	keys := make([]string, 0, len(imgs))
	for k := range imgs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	idxType := types.OCIImageIndex
	adds := make([]mutate.IndexAddendum, 0, len(keys))
	for _, k := range keys {
		parts := strings.Split(k, "/")
		if len(parts) < 2 || len(parts) > 3 {
			t.Fatalf("imagetest: platform %q is not os/arch[/variant]", k)
		}
		p := v1.Platform{OS: parts[0], Architecture: parts[1]}
		if len(parts) == 3 {
			p.Variant = parts[2]
		}
		img := setPlatform(t, imgs[k], p, nil)
		mt, err := img.MediaType()
		if err != nil {
			t.Fatalf("imagetest: image media type: %v", err)
		}
		if mt == types.DockerManifestSchema2 {
			idxType = types.DockerManifestList
		}
		pp := p
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &pp}})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, idxType), adds...)
}

// PullBenchImage pushes the image the pull benchmarks use, as repoTag: three
// layers of random, incompressible files, about 50 MB in all. It returns the
// bytes a pull transfers.
func PullBenchImage(t testing.TB, reg *Registry, repoTag string) int64 {
	t.Helper()
	const layerBytes = 50 << 20 / 3
	img := Image(t, v1.Config{},
		RandomFilesLayer(t, 11, layerBytes, 40),
		RandomFilesLayer(t, 12, layerBytes, 40),
		RandomFilesLayer(t, 13, layerBytes, 40),
	)
	reg.Push(t, repoTag, img)
	var total int64
	layers, _ := img.Layers()
	for _, l := range layers {
		n, _ := l.Size()
		total += n
	}
	return total
}
