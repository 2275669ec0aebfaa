package imagetest

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is an in-process OCI distribution registry (go-containerregistry's
// pkg/registry) listening on 127.0.0.1 over plain HTTP, or HTTPS with
// WithTLS. It is safe for concurrent use.
type Registry struct {
	// Host is "127.0.0.1:PORT"; image references are Host + "/" + repo:tag.
	Host string

	auth      []authRule
	pushToken string // value of pushHeader on requests made by Push
	inner     http.Handler
	srv       *http.Server
	cancel    context.CancelFunc // cancels every request context (BaseContext)
	pushRT    *http.Transport

	intercept atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]

	tlsCA     *CA  // WithTLS
	mutualTLS bool // WithTLS

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
	blobGets map[string]int // digest -> GETs
	manGets  int

	closeOnce sync.Once
	closeErr  error
}

// pushHeader marks requests issued by Push so that they bypass counters,
// Intercept and auth. remote.Write issues GETs of its own, so counting by
// method alone would not make the pull counters exact.
const pushHeader = "X-Imagetest-Push"

type authRule struct{ user, pass, prefix string }

// Option configures NewRegistry.
type Option func(*Registry)

// WithBasicAuth makes repositories whose name starts with repoPrefix require
// HTTP basic auth with user/pass: without valid credentials they answer 401
// with `WWW-Authenticate: Basic realm="imagetest"`. May be given several times.
//
// As soon as any rule exists, the /v2/ ping also answers 401 with the Basic
// challenge unless valid credentials (of any rule) are sent, like a registry
// configured with htpasswd. go-containerregistry's client then attaches the
// caller's credentials to every request (it does so after a 200 ping too), and
// anonymous clients keep pulling repositories outside every prefix, since a
// Basic challenge with anonymous credentials just sends no Authorization.
func WithBasicAuth(user, pass, repoPrefix string) Option {
	return func(r *Registry) { r.auth = append(r.auth, authRule{user, pass, repoPrefix}) }
}

// NewRegistry starts a registry on 127.0.0.1:0; it is closed in t.Cleanup.
func NewRegistry(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	r := &Registry{
		pushToken: hex.EncodeToString(tok),
		inner:     registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		blobGets:  map[string]int{},
		pushRT:    http.DefaultTransport.(*http.Transport).Clone(),
	}
	for _, o := range opts {
		o(r)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("imagetest: listen: %v", err)
	}
	r.Host = ln.Addr().String()
	base, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.srv = &http.Server{
		Handler:     http.HandlerFunc(r.serveHTTP),
		BaseContext: func(net.Listener) context.Context { return base },
		ErrorLog:    log.New(io.Discard, "", 0),
	}
	if r.tlsCA != nil {
		ln = r.serveTLS(t, ln)
	}
	go func() { _ = r.srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := r.close(); err != nil {
			t.Errorf("imagetest: %v", err)
		}
	})
	return r
}

// serveTLS wraps ln in TLS with a certificate of the registry's CA, and
// makes Push trust that CA (and present a client certificate of it).
func (r *Registry) serveTLS(t testing.TB, ln net.Listener) net.Listener {
	cfg := &tls.Config{Certificates: []tls.Certificate{r.tlsCA.Server(t).TLS}, MinVersion: tls.VersionTLS12}
	if r.mutualTLS {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, r.tlsCA.Pool()
	}
	r.pushRT.TLSClientConfig = &tls.Config{
		RootCAs:      r.tlsCA.Pool(),
		Certificates: []tls.Certificate{r.tlsCA.Client(t, "imagetest push").TLS},
		MinVersion:   tls.VersionTLS12,
	}
	return tls.NewListener(ln, cfg)
}

// Ref returns the full reference of repoAndTag in this registry, e.g.
// Ref("test/busybox:1.0") == "127.0.0.1:PORT/test/busybox:1.0".
func (r *Registry) Ref(repoAndTag string) string { return r.Host + "/" + repoAndTag }

// Push uploads img as r.Host/repoAndTag and returns its manifest digest.
// Pushes are not counted, not intercepted and not subject to WithBasicAuth.
func (r *Registry) Push(t testing.TB, repoAndTag string, img v1.Image) v1.Hash {
	t.Helper()
	ref := r.parse(t, repoAndTag)
	if err := remote.Write(ref, img, r.pushOpts(t)...); err != nil {
		t.Fatalf("imagetest: push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("imagetest: digest: %v", err)
	}
	return d
}

// PushIndex uploads idx and all its images as r.Host/repoAndTag and returns
// the index digest.
func (r *Registry) PushIndex(t testing.TB, repoAndTag string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	ref := r.parse(t, repoAndTag)
	if err := remote.WriteIndex(ref, idx, r.pushOpts(t)...); err != nil {
		t.Fatalf("imagetest: push index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("imagetest: digest: %v", err)
	}
	return d
}

func (r *Registry) parse(t testing.TB, repoAndTag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.Ref(repoAndTag), name.StrictValidation, name.Insecure)
	if err != nil {
		t.Fatalf("imagetest: reference %q: %v", repoAndTag, err)
	}
	return ref
}

func (r *Registry) pushOpts(t testing.TB) []remote.Option {
	return []remote.Option{
		remote.WithContext(t.Context()),
		remote.WithTransport(markTransport{r.pushRT, r.pushToken}),
	}
}

type markTransport struct {
	inner http.RoundTripper
	token string
}

func (m markTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set(pushHeader, m.token)
	return m.inner.RoundTrip(req)
}

// BlobGets reports how many GET requests arrived for /v2/<any repo>/blobs/<d>
// (outside Push), including ones answered by Intercept or refused by auth.
func (r *Registry) BlobGets(d v1.Hash) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobGets[d.String()]
}

// ManifestGets reports how many GET requests arrived for
// /v2/<any repo>/manifests/<ref> (outside Push; HEADs are not counted),
// including ones answered by Intercept or refused by auth.
func (r *Registry) ManifestGets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.manGets
}

// ResetCounters zeroes BlobGets and ManifestGets.
func (r *Registry) ResetCounters() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blobGets = map[string]int{}
	r.manGets = 0
}

// Intercept installs f to run before the registry (and before auth) on every
// request except Push's. If f returns true it has answered the request.
// f may block (to simulate a hung registry) but must return once
// req.Context() is done; that happens when the client goes away or the
// registry closes. Intercept(nil) removes it.
func (r *Registry) Intercept(f func(w http.ResponseWriter, req *http.Request) bool) {
	if f == nil {
		r.intercept.Store(nil)
		return
	}
	r.intercept.Store(&f)
}

// Close stops the registry: it cancels every in-flight request context, closes
// all connections and waits for handlers to return. It is idempotent and is
// also run by t.Cleanup, which reports handlers that ignored their context.
func (r *Registry) Close() { _ = r.close() }

func (r *Registry) close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		r.cancel()
		_ = r.srv.Close()
		r.pushRT.CloseIdleConnections()
		done := make(chan struct{})
		go func() { r.inflight.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			r.closeErr = errors.New("registry handlers still running 10s after Close; an Intercept func ignores req.Context()")
		}
	})
	return r.closeErr
}

// repoPath splits /v2/<repo>/<kind>/<rest> for the kinds the registry serves.
var repoPath = regexp.MustCompile(`^/v2/(.+?)/(blobs|manifests|tags|referrers)/(.*)$`)

func (r *Registry) serveHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		http.Error(w, "registry closed", http.StatusServiceUnavailable)
		return
	}
	r.inflight.Add(1)
	defer r.inflight.Done()

	pushing := subtle.ConstantTimeCompare([]byte(req.Header.Get(pushHeader)), []byte(r.pushToken)) == 1
	m := repoPath.FindStringSubmatch(req.URL.Path)
	if !pushing && req.Method == http.MethodGet && m != nil {
		switch {
		case m[2] == "manifests":
			r.manGets++
		case m[2] == "blobs" && !strings.HasPrefix(m[3], "uploads"):
			r.blobGets[m[3]]++
		}
	}
	r.mu.Unlock()

	if pushing {
		r.inner.ServeHTTP(w, req)
		return
	}
	if f := r.intercept.Load(); f != nil && (*f)(w, req) {
		return
	}
	if !r.authorized(req, m) {
		w.Header().Set("WWW-Authenticate", `Basic realm="imagetest"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
		return
	}
	r.inner.ServeHTTP(w, req)
}

// authorized applies WithBasicAuth rules; m is the repoPath match (nil for
// /v2/ and /v2/_catalog, which need credentials of any rule).
func (r *Registry) authorized(req *http.Request, m []string) bool {
	if len(r.auth) == 0 {
		return true
	}
	user, pass, ok := req.BasicAuth()
	valid := func(a authRule) bool {
		return ok && subtle.ConstantTimeCompare([]byte(user), []byte(a.user)) == 1 &&
			subtle.ConstantTimeCompare([]byte(pass), []byte(a.pass)) == 1
	}
	if m == nil {
		for _, a := range r.auth {
			if valid(a) {
				return true
			}
		}
		return false
	}
	for _, a := range r.auth {
		if strings.HasPrefix(m[1], a.prefix) && !valid(a) {
			return false
		}
	}
	return true
}

// Credentials returns a remote option authenticating as user/pass, for pulls
// in tests.
func Credentials(user, pass string) remote.Option {
	return remote.WithAuth(&authn.Basic{Username: user, Password: pass})
}
