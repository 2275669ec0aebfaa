// Package image is husk's image store: it pulls images from registries,
// keeps their manifests and configs content-addressed, unpacks every layer
// once per diffID into a directory that overlayfs can use as a lower dir, and
// remembers which names point at which image.
//
// Layout under the store's directory:
//
//	blobs/sha256/<hex>    manifests, indexes and image configs, by digest
//	layers/<hex>/fs       an unpacked layer, by diffID (overlayfs whiteouts)
//	layers/<hex>/meta.json its size and inode count
//	tmp/                  work in progress; emptied when the store opens
//	images.json           every image with its names, replaced atomically
//
// Nothing becomes visible under blobs/ or layers/ before it is complete and
// verified (it is built in tmp/ and renamed), and an image is recorded in
// images.json only after all its pieces are in place, so a crash at any
// moment leaves nothing that passes for a complete image.
package image

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/internal/atomicfile"
)

// Image is one image in the store.
type Image struct {
	// ID is the digest of the image's config, "sha256:<hex>".
	ID          string   `json:"id"`
	RepoTags    []string `json:"repoTags,omitempty"`
	RepoDigests []string `json:"repoDigests,omitempty"`
	// Layers are the diffIDs, lowest first.
	Layers []digest.Digest `json:"layers"`
	// Blobs are the manifests (and index) that led to this image, kept
	// with it so that the store holds every document an image was pulled by.
	Blobs []digest.Digest `json:"blobs"`
	// Size is the bytes the unpacked layers and the config take.
	Size uint64 `json:"size"`
	// User is the image config's USER, kept here so that ImageStatus does
	// not read the config.
	User string `json:"user,omitempty"`
}

type indexFile struct {
	Version int      `json:"version"`
	Images  []*Image `json:"images"`
}

// Options configure a Store.
type Options struct {
	// Registries holds mirrors and plain-HTTP permissions per registry host.
	Registries map[string]RegistryConfig
	// UserAgent is sent to registries.
	UserAgent string
	// ProgressTimeout ends a pull when its registry sends nothing for this
	// long; DefaultProgressTimeout when zero.
	ProgressTimeout time.Duration
	// Pinned names the images reported as pinned (see Store.Pinned).
	Pinned []string
	// CertsDirs hold registries' TLS files by host (tls.go).
	CertsDirs []string
	// AuthFile holds credentials for pulls that bring none (authfile.go).
	AuthFile string
	// SignaturePolicy says, by scope, which images are accepted
	// (signature.go).
	SignaturePolicy map[string]PolicyConfig
}

// DefaultProgressTimeout is how long a registry may stay silent in the
// middle of a pull.
const DefaultProgressTimeout = time.Minute

// Store is safe for concurrent use.
type Store struct {
	dir string
	// cfg is what Reconfigure replaces whole (a config reload); each use
	// reads the current one.
	cfg atomic.Pointer[storeConfig]
	// authKey keys the hashes of credentials that keep pulls with
	// different credentials apart; it never leaves the process.
	authKey []byte

	mu     sync.Mutex
	images map[string]*Image // by ID
	leases map[digest.Digest]int

	pulls    flightGroup[*Image]
	layers   flightGroup[struct{}]
	removing sync.WaitGroup
	sync     syncer
	inUse    func() []digest.Digest
}

// storeConfig is the store's options with what is made of them.
type storeConfig struct {
	Options
	pinned   []pinPattern
	policies map[string]*policy

	mu         sync.Mutex
	rt         *http.Transport              // shared by hosts of no TLS settings
	transports map[string]http.RoundTripper // by host, made at the first pull
}

func newStoreConfig(opts Options) (*storeConfig, error) {
	if err := ValidateRegistries(opts.Registries); err != nil {
		return nil, err
	}
	pinned, err := parsePinned(opts.Pinned)
	if err != nil {
		return nil, err
	}
	policies, err := loadPolicies(opts.SignaturePolicy)
	if err != nil {
		return nil, err
	}
	checkCertsDirs(opts.Registries, opts.CertsDirs)
	return &storeConfig{Options: opts, pinned: pinned, policies: policies, rt: newTransport(), transports: map[string]http.RoundTripper{}}, nil
}

func (s *Store) config() *storeConfig { return s.cfg.Load() }

// Reconfigure replaces the store's options, for a config reload: pulls
// under way finish with what they started with where they read it
// already; the next requests to a registry use the new settings (TLS
// files are read again). The user agent stays.
func (s *Store) Reconfigure(opts Options) error {
	next, err := newStoreConfig(opts)
	if err != nil {
		return err
	}
	next.UserAgent = s.config().UserAgent
	old := s.cfg.Swap(next)
	old.closeIdle()
	return nil
}

// closeIdle closes the idle connections of a replaced config's
// transports; those in use finish their requests.
func (c *storeConfig) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rt.CloseIdleConnections()
	for _, rt := range c.transports {
		if t, ok := rt.(*http.Transport); ok {
			t.CloseIdleConnections()
		}
	}
}

// Open opens or creates the store in dir. Leftovers of work that was
// interrupted (a crash during a pull) are removed.
func Open(dir string, opts Options) (*Store, error) {
	cfg, err := newStoreConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, images: map[string]*Image{}, leases: map[digest.Digest]int{}}
	s.cfg.Store(cfg)
	s.authKey = make([]byte, 32)
	if _, err := rand.Read(s.authKey); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return nil, fmt.Errorf("clearing %s: %w", s.tmpDir(), err)
	}
	// Earlier builds wrote the index's temporary file next to it.
	if stale, err := filepath.Glob(filepath.Join(dir, ".images.json.tmp-*")); err == nil {
		for _, f := range stale {
			_ = os.Remove(f)
		}
	}
	for _, d := range []string{s.tmpDir(), filepath.Join(dir, "blobs", "sha256"), filepath.Join(dir, "layers")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating image store: %w", err)
		}
	}
	// Unpacked layers hold the images' setuid binaries and device nodes:
	// no user of the host may reach them (Docker's CVE-2021-41091).
	// Overlayfs reads lower dirs with the mounter's credentials, so
	// containers running as any user do not need the path open.
	for _, d := range []string{dir, filepath.Join(dir, "layers")} {
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, err
		}
	}
	s.checkDurability()
	if err := s.load(); err != nil {
		return nil, err
	}
	// Leftovers of interrupted pulls are collected once the store knows
	// which layers containers use (SetInUse): collecting now could take a
	// layer from under a container whose image was removed.
	return s, nil
}

// Dir is where the store keeps everything.
func (s *Store) Dir() string { return s.dir }

func (s *Store) tmpDir() string    { return filepath.Join(s.dir, "tmp") }
func (s *Store) indexPath() string { return filepath.Join(s.dir, "images.json") }
func (s *Store) blobPath(d digest.Digest) string {
	return filepath.Join(s.dir, "blobs", d.Algorithm().String(), d.Encoded())
}
func (s *Store) layerDir(diffID digest.Digest) string {
	return filepath.Join(s.dir, "layers", diffID.Encoded())
}

// LayerPath is the directory to use as an overlayfs lower dir for diffID.
func (s *Store) LayerPath(diffID digest.Digest) string {
	return filepath.Join(s.layerDir(diffID), "fs")
}

func (s *Store) load() error {
	b, err := os.ReadFile(s.indexPath())
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading image index: %w", err)
	}
	var idx indexFile
	if err := json.Unmarshal(b, &idx); err != nil {
		return fmt.Errorf("image index %s is corrupt: %w", s.indexPath(), err)
	}
	for _, img := range idx.Images {
		if img == nil || !idPattern.MatchString(img.ID) || !validDigests(img.Layers) || !validDigests(img.Blobs) {
			klog.Warningf("image index %s holds a malformed entry; skipping it", s.indexPath())
			continue
		}
		if !s.complete(img) {
			// Only possible if something outside husk deleted files.
			klog.Warningf("image %s is missing pieces in the store; forgetting it", img.ID)
			continue
		}
		s.images[img.ID] = img
	}
	return nil
}

func validDigests(ds []digest.Digest) bool {
	for _, d := range ds {
		if d.Validate() != nil {
			return false
		}
	}
	return true
}

func (s *Store) complete(img *Image) bool {
	for _, d := range append(slices.Clone(img.Blobs), digest.Digest(img.ID)) {
		if _, err := os.Stat(s.blobPath(d)); err != nil {
			return false
		}
	}
	for _, l := range img.Layers {
		if _, err := os.Stat(filepath.Join(s.layerDir(l), "meta.json")); err != nil {
			return false
		}
	}
	return true
}

// saveLocked writes the index. It replaces the file atomically, so a crash
// leaves either the old or the new index.
func (s *Store) saveLocked() error {
	idx := indexFile{Version: 1}
	for _, img := range s.images {
		idx.Images = append(idx.Images, img)
	}
	slices.SortFunc(idx.Images, func(a, b *Image) int {
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return atomicfile.Write(s.indexPath(), b, 0o600, atomicfile.Options{TempDir: s.tmpDir(), Durable: true})
}

// List returns copies of every image.
func (s *Store) List() []Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Image, 0, len(s.images))
	for _, img := range s.images {
		out = append(out, copyImage(img))
	}
	slices.SortFunc(out, func(a, b Image) int {
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return out
}

func copyImage(img *Image) Image {
	c := *img
	c.RepoTags = slices.Clone(img.RepoTags)
	c.RepoDigests = slices.Clone(img.RepoDigests)
	c.Layers = slices.Clone(img.Layers)
	c.Blobs = slices.Clone(img.Blobs)
	return c
}

// Get finds an image by id ("sha256:<hex>" or the bare hex), by tag or by
// digest reference, in any form a user may type ("busybox" is found as
// docker.io/library/busybox:latest). The error wraps errdefs.ErrNotFound when
// there is no such image and errdefs.ErrInvalidArgument when ref cannot name
// one.
func (s *Store) Get(ref string) (Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img, _, err := s.resolveLocked(ref)
	if err != nil {
		return Image{}, err
	}
	return copyImage(img), nil
}

// resolveLocked returns the image and, when ref names it by tag, the
// canonical tag.
func (s *Store) resolveLocked(ref string) (*Image, string, error) {
	if id, ok := normalizeID(ref); ok {
		if img := s.images[id.String()]; img != nil {
			return img, "", nil
		}
		return nil, "", fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	if ref == "" {
		return nil, "", fmt.Errorf("image reference is empty: %w", errdefs.ErrInvalidArgument)
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, "", fmt.Errorf("image reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	if _, ok := named.(reference.Digested); !ok {
		named = reference.TagNameOnly(named)
	}
	canonical := named.String()
	for _, img := range s.images {
		if slices.Contains(img.RepoTags, canonical) {
			return img, canonical, nil
		}
		if slices.Contains(img.RepoDigests, canonical) {
			return img, "", nil
		}
	}
	// "repo:tag@sha256:..." names the image by its digest.
	if d, ok := named.(reference.Digested); ok {
		byDigest := reference.TrimNamed(named).String() + "@" + d.Digest().String()
		for _, img := range s.images {
			if slices.Contains(img.RepoDigests, byDigest) {
				return img, "", nil
			}
		}
	}
	return nil, "", fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
}

// Remove removes the image ref names (a tag, a digest or its id) with all
// its tags. Removing what is not there succeeds: kubelet retries removals.
func (s *Store) Remove(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Whatever names it, by tag, digest or ID, the image goes with all its
	// tags: api.proto says so, and critest's conformance specs check it.
	img, _, err := s.resolveLocked(ref)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	delete(s.images, img.ID)
	if err := s.saveLocked(); err != nil {
		s.images[img.ID] = img
		return fmt.Errorf("removing image %s: %w", img.ID, err)
	}
	s.collectLocked()
	return nil
}

// Config reads the OCI config of the image with the given id.
func (s *Store) Config(id string) (ocispec.Image, []byte, error) {
	d, ok := normalizeID(id)
	if !ok {
		return ocispec.Image{}, nil, fmt.Errorf("image id %q: %w", id, errdefs.ErrInvalidArgument)
	}
	b, err := os.ReadFile(s.blobPath(d))
	if err != nil {
		if os.IsNotExist(err) {
			return ocispec.Image{}, nil, fmt.Errorf("image %s: %w", id, errdefs.ErrNotFound)
		}
		return ocispec.Image{}, nil, err
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(b, &cfg); err != nil {
		return ocispec.Image{}, nil, fmt.Errorf("config of image %s: %w", id, err)
	}
	return cfg, b, nil
}

// LeaseLayers keeps layers from being collected until the returned func is
// called: for a container being created from an image someone may remove.
func (s *Store) LeaseLayers(diffIDs []digest.Digest) func() {
	return s.lease(diffIDs...)
}

// SetInUse tells the store which layers containers use: those stay when
// their image is removed. It then collects what an interrupted pull or a
// removal left.
func (s *Store) SetInUse(fn func() []digest.Digest) {
	s.mu.Lock()
	s.inUse = fn
	s.collectLocked()
	s.mu.Unlock()
}

// lease keeps digests (blobs or diffIDs) from being collected while a pull
// that needs them is running; the returned func gives them back.
func (s *Store) lease(ds ...digest.Digest) func() {
	s.mu.Lock()
	for _, d := range ds {
		s.leases[d]++
	}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		for _, d := range ds {
			if s.leases[d]--; s.leases[d] <= 0 {
				delete(s.leases, d)
			}
		}
		s.mu.Unlock()
	}
}

// collectLocked removes blobs and layers that no image refers to and no
// pull holds. They are first renamed into tmp/ under the lock, so a pull
// never sees half a layer, then deleted in the background.
func (s *Store) collectLocked() {
	used := map[string]bool{}
	for _, img := range s.images {
		used[digest.Digest(img.ID).Encoded()] = true
		for _, d := range img.Blobs {
			used[d.Encoded()] = true
		}
		for _, d := range img.Layers {
			used[d.Encoded()] = true
		}
	}
	for d := range s.leases {
		used[d.Encoded()] = true
	}
	if s.inUse != nil {
		for _, d := range s.inUse() {
			used[d.Encoded()] = true
		}
	}
	var doomed string
	for _, dir := range []string{filepath.Join(s.dir, "blobs", "sha256"), filepath.Join(s.dir, "layers")} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			klog.Warningf("image store: listing %s: %v", dir, err)
			continue
		}
		for _, e := range entries {
			if used[e.Name()] {
				continue
			}
			if doomed == "" {
				if doomed, err = os.MkdirTemp(s.tmpDir(), "gc-"); err != nil {
					klog.Warningf("image store: %v", err)
					return
				}
			}
			// Blobs and layers share the namespace of hex digests, and a
			// blob may have the hex of a layer: keep them apart.
			dst := filepath.Join(doomed, filepath.Base(dir)+"-"+e.Name())
			if err := os.Rename(filepath.Join(dir, e.Name()), dst); err != nil {
				klog.Warningf("image store: collecting %s: %v", e.Name(), err)
			}
		}
	}
	if doomed != "" {
		s.removing.Add(1)
		go func() {
			defer s.removing.Done()
			// The background sync may be marking a layer in there through a
			// handle it opened before the rename: try again after it.
			var err error
			for range 5 {
				if err = os.RemoveAll(doomed); err == nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			klog.Warningf("image store: removing %s: %v", doomed, err)
		}()
	}
}

// Close waits for background removals and syncs to finish. The store must
// not be used afterwards.
func (s *Store) Close() error {
	s.removing.Wait()
	s.sync.close()
	return nil
}

// Usage is what the store takes on its filesystem.
type Usage struct {
	Bytes  uint64
	Inodes uint64
}

// Usage adds up the store's layers and blobs. Layers carry their totals in
// meta.json, so this does not walk unpacked trees.
func (s *Store) Usage(ctx context.Context) (Usage, error) {
	var u Usage
	entries, err := os.ReadDir(filepath.Join(s.dir, "layers"))
	if err != nil {
		return u, err
	}
	for _, e := range entries {
		m, err := readLayerMeta(filepath.Join(s.dir, "layers", e.Name()))
		if err != nil {
			continue // collected meanwhile
		}
		u.Bytes += m.Size
		u.Inodes += m.Inodes
	}
	err = filepath.WalkDir(filepath.Join(s.dir, "blobs"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		u.Inodes++
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			u.Bytes += uint64(info.Size())
		}
		return nil
	})
	return u, err
}
