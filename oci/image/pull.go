package image

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/internal/tracing"
)

// Auth is the credential a PullImage request carries. It is used for that
// pull only: never stored, never logged.
type Auth struct {
	Username      string
	Password      string
	Auth          string // base64 of "username:password"
	IdentityToken string
	RegistryToken string
}

func (a *Auth) authenticator() authn.Authenticator {
	if a == nil || *a == (Auth{}) {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{
		Username:      a.Username,
		Password:      a.Password,
		Auth:          a.Auth,
		IdentityToken: a.IdentityToken,
		RegistryToken: a.RegistryToken,
	})
}

// layerConcurrency bounds parallel layer downloads of one pull.
const layerConcurrency = 3

// Pull fetches ref (tag defaulting to latest, Docker short names
// expanded) and returns the stored image. Concurrent pulls of one reference
// share one download.
func (s *Store) Pull(ctx context.Context, ref string, auth *Auth) (Image, error) {
	named, err := ParseReference(ref)
	if err != nil {
		return Image{}, err
	}
	if auth == nil || *auth == (Auth{}) {
		if auth, err = fileAuth(s.config().AuthFile, named); err != nil {
			return Image{}, fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
		}
	}
	// Different credentials must not share a download: one caller could
	// otherwise read an image with another's rights.
	key := named.String()
	if auth != nil && *auth != (Auth{}) {
		// Keyed, so that the key (logged if the pull panics) cannot be
		// used to guess a password offline.
		mac := hmac.New(sha256.New, s.authKey)
		_, _ = fmt.Fprintf(mac, "%#v", *auth)
		key += "\x00" + hex.EncodeToString(mac.Sum(nil))
	}
	img, err := s.pulls.Do(ctx, key, func(ctx context.Context) (*Image, error) {
		return s.pull(ctx, named, auth)
	})
	if err != nil {
		if ctx.Err() != nil {
			return Image{}, fmt.Errorf("pulling %s: %w", named, ctx.Err())
		}
		return Image{}, err
	}
	return *img, nil
}

// errStalled ends a download whose registry stopped sending.
var errStalled = errors.New("no progress")

func (s *Store) progressTimeout() time.Duration {
	if t := s.config().ProgressTimeout; t > 0 {
		return t
	}
	return DefaultProgressTimeout
}

// stallGuard cancels ctx when progress is not called for the progress
// timeout. kubelet puts no deadline on PullImage: without this, a registry
// that stops sending would hold a pull forever. pause stops watching;
// release ends ctx.
func (s *Store) stallGuard(ctx context.Context) (_ context.Context, progress, pause, release func()) {
	timeout := s.progressTimeout()
	ctx, cancel := context.WithCancelCause(ctx)
	wd := time.AfterFunc(timeout, func() { cancel(errStalled) })
	return ctx, func() { wd.Reset(timeout) }, func() { wd.Stop() }, func() { wd.Stop(); cancel(nil) }
}

func (s *Store) stalled(ctx context.Context, what string, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errStalled) {
		return fmt.Errorf("%s: the registry sent nothing for %v: %w", what, s.progressTimeout(), errdefs.ErrUnavailable)
	}
	return err
}

func (s *Store) pull(ctx context.Context, named reference.Named, auth *Auth) (*Image, error) {
	img, err := s.pullEndpoints(ctx, named, auth)
	if err != nil {
		// Layers and blobs this pull stored for an image it could not
		// record go now, not at the next removal or restart.
		s.mu.Lock()
		s.collectLocked()
		s.mu.Unlock()
	}
	return img, err
}

func (s *Store) pullEndpoints(ctx context.Context, named reference.Named, auth *Auth) (*Image, error) {
	eps := endpoints(s.config().Registries, reference.Domain(named))
	var mirrorErrs []string
	for i, ep := range eps {
		img, err := s.pullFrom(ctx, ep, named, auth)
		if err == nil {
			return img, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if i < len(eps)-1 {
			// A mirror that lacks the image or fails falls through to the
			// next endpoint; its error is told, but the code a client acts
			// on comes from the registry itself.
			klog.V(2).InfoS("Pull from mirror failed", "image", named.String(), "mirror", ep.String(), "err", err)
			mirrorErrs = append(mirrorErrs, fmt.Sprintf("%s: %v", ep, err))
			continue
		}
		if len(mirrorErrs) > 0 {
			return nil, fmt.Errorf("pulling %s: %s: %w (mirrors failed too: %s)", named, ep, err, strings.Join(mirrorErrs, "; "))
		}
		return nil, fmt.Errorf("pulling %s: %s: %w", named, ep, err)
	}
	return nil, fmt.Errorf("pulling %s: no endpoint: %w", named, errdefs.ErrInternal)
}

func (s *Store) remoteRef(ep endpoint, named reference.Named) (name.Reference, error) {
	var opts []name.Option
	if ep.insecure {
		opts = append(opts, name.Insecure)
	}
	repo := ep.host + "/" + reference.Path(named)
	if d, ok := named.(reference.Digested); ok {
		return name.NewDigest(repo+"@"+d.Digest().String(), opts...)
	}
	tag := named.(reference.Tagged).Tag()
	return name.NewTag(repo+":"+tag, opts...)
}

func (s *Store) remoteOptions(ctx context.Context, ep endpoint, auth *Auth, progress func()) []remote.Option {
	allowed := map[string]bool{}
	if ep.insecure {
		allowed[ep.host] = true
	}
	rt := registryTransport{next: byHost{s}, allowed: allowed, progress: progress}
	ua := s.config().UserAgent
	if ua == "" {
		ua = "husk"
	}
	// Credentials were issued for the registry: a mirror, which the
	// administrator chose and may speak plain HTTP, never sees them.
	if ep.mirror {
		auth = nil
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(auth.authenticator()),
		remote.WithTransport(rt),
		remote.WithUserAgent(ua),
		// No variant: go-containerregistry then matches any, which is what
		// arm64 images need (their indexes list "v8" or nothing).
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
	}
}

func (s *Store) pullFrom(ctx context.Context, ep endpoint, named reference.Named, auth *Auth) (_ *Image, err error) {
	ref, err := s.remoteRef(ep, named)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	// Everything this attempt starts ends with it, so that a failed mirror
	// does not keep downloading while the next endpoint is tried.
	ctx, progress, pause, release := s.stallGuard(ctx)
	defer release()
	defer func() { err = s.stalled(ctx, "fetching the manifest", err) }()
	opts := s.remoteOptions(ctx, ep, auth, progress)
	img, topDigest, blobs, err := fetchManifest(named, ref, opts)
	if err != nil {
		return nil, err
	}
	// Before anything is stored or downloaded.
	if err := s.checkPolicy(named, ref.Context(), topDigest, opts); err != nil {
		return nil, err
	}
	manifest, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("parsing manifest: %v: %w", err, errdefs.ErrDataLoss)
	}
	configDigest, err := digest.Parse(manifest.Config.Digest.String())
	if err != nil {
		return nil, fmt.Errorf("config digest: %v: %w", err, errdefs.ErrDataLoss)
	}
	if configDigest.Algorithm() != digest.SHA256 {
		// Image ids are sha256 throughout the CRI and kubelet.
		return nil, fmt.Errorf("config digest %s: only sha256 is supported: %w", configDigest, errdefs.ErrNotImplemented)
	}
	releaseBlobs := s.lease(append(slices.Collect(keys(blobs)), configDigest)...)
	defer releaseBlobs()
	rawConfig, cfg, err := s.readConfig(img, configDigest)
	if err != nil {
		return nil, err
	}
	blobs[configDigest] = rawConfig
	layers, err := imageLayers(manifest, cfg, configDigest)
	if err != nil {
		return nil, err
	}
	releaseLayers := s.lease(cfg.RootFS.DiffIDs...)
	defer releaseLayers()
	defer func() {
		if err != nil {
			// Downloads this pull gave up on may still be winding down, and
			// one could yet store its layer: the cleanup after a failed pull
			// must come after them.
			for _, l := range layers {
				s.layers.wait(l.diffID.String())
			}
		}
	}()

	// Layer downloads watch for stalls themselves: a pull waiting for a
	// layer that another pull is downloading is not stalled.
	pause()
	if err := s.fetchLayers(ctx, ep, ref.Context(), auth, layers); err != nil {
		return nil, err
	}
	for d, b := range blobs {
		if err := s.writeBlob(d, b); err != nil {
			return nil, err
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return s.commit(named, topDigest, configDigest, len(rawConfig), slices.Collect(keys(blobs)), cfg)
}

// fetchManifest fetches the image's manifest, resolving an index to this
// machine's platform, and checks that each is what its digest says. blobs
// are the manifests by digest, the top one first.
func fetchManifest(named reference.Named, ref name.Reference, opts []remote.Option) (_ v1.Image, top digest.Digest, blobs map[digest.Digest][]byte, err error) {
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, "", nil, registryError(err)
	}
	top, err = digest.Parse(desc.Digest.String())
	if err != nil {
		return nil, "", nil, fmt.Errorf("manifest digest %q: %v: %w", desc.Digest, err, errdefs.ErrDataLoss)
	}
	if err := verifyBlob(desc.Manifest, top); err != nil {
		return nil, "", nil, err
	}
	if d, ok := named.(reference.Digested); ok && d.Digest() != top {
		return nil, "", nil, fmt.Errorf("registry answered %s with a manifest of digest %s: %w", named, top, errdefs.ErrDataLoss)
	}
	blobs = map[digest.Digest][]byte{top: desc.Manifest}
	switch {
	case desc.MediaType.IsIndex():
		img, err := desc.Image() // resolved to this machine's platform by WithPlatform
		if err != nil {
			return nil, "", nil, notForPlatform(err)
		}
		raw, err := img.RawManifest()
		if err != nil {
			return nil, "", nil, registryError(err)
		}
		d, err := img.Digest()
		if err != nil {
			return nil, "", nil, registryError(err)
		}
		md := digest.Digest(d.String())
		if err := verifyBlob(raw, md); err != nil {
			return nil, "", nil, err
		}
		blobs[md] = raw
		return img, top, blobs, nil
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return nil, "", nil, registryError(err)
		}
		return img, top, blobs, nil
	}
	return nil, "", nil, fmt.Errorf("%s is a %q, not an image: %w", named, desc.MediaType, errdefs.ErrFailedPrecondition)
}

// readConfig is the image's config, from the store if it has it (leased
// by the caller), else from the registry, checked against its digest.
func (s *Store) readConfig(img v1.Image, d digest.Digest) ([]byte, ocispec.Image, error) {
	raw, err := os.ReadFile(s.blobPath(d))
	if err != nil {
		if raw, err = img.RawConfigFile(); err != nil {
			return nil, ocispec.Image{}, registryError(err)
		}
	}
	if err := verifyBlob(raw, d); err != nil {
		return nil, ocispec.Image{}, err
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, ocispec.Image{}, fmt.Errorf("image config %s: %v: %w", d, err, errdefs.ErrDataLoss)
	}
	return raw, cfg, nil
}

// layerRef is a layer to fetch: its blob in the registry, the digest of
// its uncompressed tar (the config's diffID) and its size.
type layerRef struct {
	blob, diffID digest.Digest
	size         int64
}

// imageLayers pairs the manifest's layers with the config's diffIDs.
func imageLayers(manifest *v1.Manifest, cfg ocispec.Image, configDigest digest.Digest) ([]layerRef, error) {
	if len(cfg.RootFS.DiffIDs) != len(manifest.Layers) {
		return nil, fmt.Errorf("image config %s lists %d layers, its manifest %d: %w", configDigest, len(cfg.RootFS.DiffIDs), len(manifest.Layers), errdefs.ErrDataLoss)
	}
	layers := make([]layerRef, len(manifest.Layers))
	for i, l := range manifest.Layers {
		blob, err := digest.Parse(l.Digest.String())
		if err != nil {
			return nil, fmt.Errorf("layer digest %q: %v: %w", l.Digest, err, errdefs.ErrDataLoss)
		}
		diffID := cfg.RootFS.DiffIDs[i]
		if err := diffID.Validate(); err != nil || diffID.Algorithm() != digest.SHA256 {
			return nil, fmt.Errorf("image config %s: diffID %q is not a sha256 digest: %w", configDigest, diffID, errdefs.ErrDataLoss)
		}
		layers[i] = layerRef{blob: blob, diffID: diffID, size: l.Size}
	}
	return layers, nil
}

// fetchLayers fetches the layers the store lacks, a few at once; a layer
// another pull is fetching is waited for, not fetched twice.
func (s *Store) fetchLayers(ctx context.Context, ep endpoint, repo name.Repository, auth *Auth, layers []layerRef) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(layerConcurrency)
	for _, l := range layers {
		g.Go(func() error {
			_, err := s.layers.Do(gctx, l.diffID.String(), func(lctx context.Context) (struct{}, error) {
				return struct{}{}, s.fetchLayer(lctx, ep, repo, auth, l.blob, l.size, l.diffID)
			})
			return err
		})
	}
	return g.Wait()
}

// fetchLayer downloads and unpacks one layer unless it is in the store. It
// runs in a layer flight shared by every pull that needs the layer, under
// the flight's own context.
func (s *Store) fetchLayer(ctx context.Context, ep endpoint, repo name.Repository, auth *Auth, blob digest.Digest, size int64, diffID digest.Digest) (err error) {
	if _, ok := s.hasLayer(diffID); ok {
		return nil
	}
	// The flight's context keeps the first puller's values: its trace.
	ctx, span := tracing.Tracer().Start(ctx, "pulling layer "+blob.String())
	defer func() { tracing.End(span, err) }()
	ctx, progress, _, release := s.stallGuard(ctx)
	defer release()
	layer, err := remote.Layer(repo.Digest(blob.String()), s.remoteOptions(ctx, ep, auth, progress)...)
	if err != nil {
		return s.stalled(ctx, "layer "+blob.String(), registryError(err))
	}
	rc, err := layer.Compressed()
	if err != nil {
		return s.stalled(ctx, "layer "+blob.String(), registryError(err))
	}
	return s.stalled(ctx, "layer "+blob.String(), s.unpackLayer(ctx, blob, size, diffID, rc))
}

// commit records a pulled image and points named at it.
func (s *Store) commit(named reference.Named, top, config digest.Digest, configSize int, blobs []digest.Digest, cfg ocispec.Image) (*Image, error) {
	// The CRI wants a size above zero, which an image of empty layers
	// would not have without its config.
	size := uint64(configSize)
	for _, l := range cfg.RootFS.DiffIDs {
		m, ok := s.hasLayer(l)
		if !ok {
			return nil, fmt.Errorf("layer %s vanished during the pull: %w", l, errdefs.ErrAborted)
		}
		size += m.Size
	}
	repoDigest := reference.TrimNamed(named).String() + "@" + top.String()
	var tag string
	if _, ok := named.(reference.Digested); !ok {
		tag = named.String()
	}
	blobs = slices.DeleteFunc(blobs, func(d digest.Digest) bool { return d == config })
	slices.Sort(blobs)

	s.mu.Lock()
	defer s.mu.Unlock()
	id := config.String()
	old := s.images[id]
	img := &Image{ID: id, Layers: cfg.RootFS.DiffIDs, Blobs: blobs, Size: size, User: cfg.Config.User}
	var undo []func()
	if old != nil {
		saved := *old
		undo = append(undo, func() { *old = saved })
		img.RepoTags = old.RepoTags
		img.RepoDigests = old.RepoDigests
		for _, b := range old.Blobs {
			if !slices.Contains(img.Blobs, b) {
				img.Blobs = append(img.Blobs, b)
			}
		}
		*old = *img
		img = old
	} else {
		s.images[id] = img
		undo = append(undo, func() { delete(s.images, id) })
	}
	if tag != "" {
		// A tag names one image: take it from the image it named before.
		for _, other := range s.images {
			if other != img && slices.Contains(other.RepoTags, tag) {
				saved := other.RepoTags
				undo = append(undo, func() { other.RepoTags = saved })
				other.RepoTags = slices.DeleteFunc(slices.Clone(other.RepoTags), func(t string) bool { return t == tag })
			}
		}
		if !slices.Contains(img.RepoTags, tag) {
			img.RepoTags = append(slices.Clone(img.RepoTags), tag)
		}
	}
	if !slices.Contains(img.RepoDigests, repoDigest) {
		img.RepoDigests = append(slices.Clone(img.RepoDigests), repoDigest)
	}
	if err := s.saveLocked(); err != nil {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return nil, fmt.Errorf("recording image %s: %w", id, err)
	}
	c := copyImage(img)
	return &c, nil
}

func (s *Store) writeBlob(d digest.Digest, b []byte) error {
	p := s.blobPath(d)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := verifyBlob(b, d); err != nil {
		return err
	}
	f, err := os.CreateTemp(s.tmpDir(), "blob-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }()
	_, err = io.Copy(f, bytes.NewReader(b))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing blob %s: %w", d, err)
	}
	return os.Rename(tmp, p)
}

func verifyBlob(b []byte, d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("digest %q: %v: %w", d, err, errdefs.ErrDataLoss)
	}
	if got := d.Algorithm().FromBytes(b); got != d {
		return fmt.Errorf("content of %s has digest %s: %w", d, got, errdefs.ErrDataLoss)
	}
	return nil
}

func keys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// registryError gives a registry's answer the errdefs class a CRI client
// can act on.
func registryError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusUnauthorized:
			return fmt.Errorf("%w: %w", err, errdefs.ErrUnauthenticated)
		case http.StatusForbidden:
			return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
		case http.StatusTooManyRequests:
			return fmt.Errorf("%w: %w", err, errdefs.ErrResourceExhausted)
		}
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
			case transport.UnauthorizedErrorCode:
				return fmt.Errorf("%w: %w", err, errdefs.ErrUnauthenticated)
			case transport.DeniedErrorCode:
				return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
			}
		}
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	if strings.HasPrefix(err.Error(), "error verifying") || strings.Contains(err.Error(), "does not match") {
		return fmt.Errorf("%w: %w", err, errdefs.ErrDataLoss)
	}
	var jerr *json.SyntaxError
	if errors.As(err, &jerr) {
		return fmt.Errorf("registry sent a malformed document: %w: %w", err, errdefs.ErrDataLoss)
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
}

func notForPlatform(err error) error {
	if strings.Contains(err.Error(), "no child with platform") {
		return fmt.Errorf("the image has no variant for linux/%s: %v: %w", runtime.GOARCH, err, errdefs.ErrNotFound)
	}
	return registryError(err)
}
