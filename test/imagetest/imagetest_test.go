package imagetest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func hostileEntries() []Entry {
	return []Entry{
		{Name: "etc/", Type: tar.TypeDir},
		{Name: "etc/passwd", Content: []byte("root:x:0:0::/root:/bin/sh\n"), UID: 0, GID: 0},
		{Name: "bin/tool", Content: []byte("#!/bin/sh\necho hi\n"), Mode: 0o4755, UID: 1000, GID: 1001,
			Xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02", "user.note": "x"}},
		{Name: "../../escape", Content: []byte("out")},
		{Name: "/abs", Content: []byte("abs")},
		{Name: "rootlink", Type: tar.TypeSymlink, Linkname: "/"},
		{Name: "hostlink", Type: tar.TypeLink, Linkname: "/etc/shadow"},
		{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "etc/.wh.removed"},
	}
}

func mustDigest(t *testing.T, d interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func readTar(t *testing.T, rc io.ReadCloser) []*tar.Header {
	t.Helper()
	defer func() { _ = rc.Close() }()
	var hdrs []*tar.Header
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		hdrs = append(hdrs, h)
	}
}

func TestTarBytesWritesEntriesVerbatim(t *testing.T) {
	raw := TarBytes(t, hostileEntries()...)
	hdrs := readTar(t, io.NopCloser(bytes.NewReader(raw)))
	want := hostileEntries()
	if len(hdrs) != len(want) {
		t.Fatalf("got %d entries, want %d", len(hdrs), len(want))
	}
	for i, h := range hdrs {
		w := want[i]
		if h.Name != w.Name || h.Linkname != w.Linkname || h.Uid != w.UID || h.Gid != w.GID {
			t.Errorf("entry %d: got %q->%q %d:%d, want %q->%q %d:%d", i, h.Name, h.Linkname, h.Uid, h.Gid, w.Name, w.Linkname, w.UID, w.GID)
		}
	}
	byName := map[string]*tar.Header{}
	for _, h := range hdrs {
		byName[h.Name] = h
	}
	if h := byName["etc/"]; h.Typeflag != tar.TypeDir || h.Mode != 0o755 {
		t.Errorf("dir: type %c mode %o", h.Typeflag, h.Mode)
	}
	if h := byName["etc/passwd"]; h.Typeflag != tar.TypeReg || h.Mode != 0o644 || h.Size != 26 {
		t.Errorf("file: type %c mode %o size %d", h.Typeflag, h.Mode, h.Size)
	}
	tool := byName["bin/tool"]
	if tool.Mode != 0o4755 {
		t.Errorf("setuid mode lost: %o", tool.Mode)
	}
	if got := tool.PAXRecords["SCHILY.xattr.security.capability"]; got != "\x01\x00\x00\x02" {
		t.Errorf("xattr security.capability = %q", got)
	}
	if got := tool.PAXRecords["SCHILY.xattr.user.note"]; got != "x" {
		t.Errorf("xattr user.note = %q", got)
	}
	if h := byName["rootlink"]; h.Typeflag != tar.TypeSymlink || h.Linkname != "/" {
		t.Errorf("symlink: %c %q", h.Typeflag, h.Linkname)
	}
	if h := byName["hostlink"]; h.Typeflag != tar.TypeLink || h.Linkname != "/etc/shadow" {
		t.Errorf("hardlink: %c %q", h.Typeflag, h.Linkname)
	}
	if h := byName["dev/null"]; h.Typeflag != tar.TypeChar || h.Devmajor != 1 || h.Devminor != 3 || h.Mode != 0o666 {
		t.Errorf("chardev: %c %d,%d %o", h.Typeflag, h.Devmajor, h.Devminor, h.Mode)
	}
	if !bytes.Equal(raw, TarBytes(t, hostileEntries()...)) {
		t.Error("TarBytes is not reproducible")
	}
}

func testConfig() v1.Config {
	return v1.Config{
		Entrypoint: []string{"/bin/tool"},
		Cmd:        []string{"--flag"},
		Env:        []string{"PATH=/bin", "FOO=bar"},
		User:       "1000:1001",
		WorkingDir: "/work",
		StopSignal: "SIGINT",
	}
}

func TestPushPullImage(t *testing.T) {
	reg := NewRegistry(t)
	l1 := Layer(t, hostileEntries()...)
	l2 := Layer(t, Entry{Name: "hello.txt", Content: []byte("hello\n")})
	img := Image(t, testConfig(), l1, l2)

	// Building again gives the same digest: tests can pin digests.
	if a, b := mustDigest(t, img), mustDigest(t, Image(t, testConfig(), Layer(t, hostileEntries()...), l2)); a != b {
		t.Fatalf("image digest not reproducible: %s vs %s", a, b)
	}

	d := reg.Push(t, "test/busybox:1.0", img)
	if d != mustDigest(t, img) {
		t.Fatalf("Push returned %s, image digest %s", d, mustDigest(t, img))
	}
	l1d, l2d := mustDigest(t, l1), mustDigest(t, l2)
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if reg.ManifestGets() != 0 || reg.BlobGets(l1d) != 0 || reg.BlobGets(cfgName) != 0 {
		t.Fatalf("push was counted: manifests=%d l1=%d cfg=%d", reg.ManifestGets(), reg.BlobGets(l1d), reg.BlobGets(cfgName))
	}

	ref, err := name.ParseReference(reg.Ref("test/busybox:1.0"), name.StrictValidation)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if gd := mustDigest(t, got); gd != d {
		t.Fatalf("pulled digest %s, pushed %s", gd, d)
	}
	if mt, _ := got.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", mt)
	}
	m, err := got.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 2 || m.Layers[0].MediaType != types.OCILayer || m.Layers[0].Digest != l1d {
		t.Errorf("manifest: %+v", m)
	}
	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	want := testConfig()
	c := cf.Config
	if strings.Join(c.Entrypoint, " ") != "/bin/tool" || strings.Join(c.Cmd, " ") != "--flag" ||
		strings.Join(c.Env, ",") != "PATH=/bin,FOO=bar" || c.User != want.User || c.WorkingDir != want.WorkingDir || c.StopSignal != want.StopSignal {
		t.Errorf("config: %+v", c)
	}
	diff1, _ := l1.DiffID()
	diff2, _ := l2.DiffID()
	if cf.RootFS.Type != "layers" || len(cf.RootFS.DiffIDs) != 2 || cf.RootFS.DiffIDs[0] != diff1 || cf.RootFS.DiffIDs[1] != diff2 {
		t.Errorf("rootfs: %+v", cf.RootFS)
	}

	layers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed() // verifies the compressed digest while reading
	if err != nil {
		t.Fatal(err)
	}
	hdrs := readTar(t, rc)
	if len(hdrs) != len(hostileEntries()) || hdrs[3].Name != "../../escape" || hdrs[4].Name != "/abs" {
		t.Errorf("pulled layer entries: %d, [3]=%q [4]=%q", len(hdrs), hdrs[3].Name, hdrs[4].Name)
	}

	if n := reg.ManifestGets(); n != 1 {
		t.Errorf("ManifestGets = %d, want 1", n)
	}
	if n := reg.BlobGets(cfgName); n != 1 {
		t.Errorf("config BlobGets = %d, want 1", n)
	}
	if n := reg.BlobGets(l1d); n != 1 {
		t.Errorf("layer 1 BlobGets = %d, want 1", n)
	}
	if n := reg.BlobGets(l2d); n != 0 {
		t.Errorf("layer 2 BlobGets = %d, want 0 (never read)", n)
	}
	reg.ResetCounters()
	if reg.ManifestGets() != 0 || reg.BlobGets(l1d) != 0 {
		t.Error("ResetCounters did not reset")
	}
}

func TestDockerImage(t *testing.T) {
	reg := NewRegistry(t)
	img := DockerImage(t, testConfig(), Layer(t, Entry{Name: "a", Content: []byte("a")}))
	d := reg.Push(t, "docker/img:latest", img)
	got, err := remote.Image(mustRef(t, reg.Ref("docker/img@"+d.String())))
	if err != nil {
		t.Fatal(err)
	}
	m, err := got.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.DockerManifestSchema2 || m.Config.MediaType != types.DockerConfigJSON || m.Layers[0].MediaType != types.DockerLayer {
		t.Errorf("docker media types: %s %s %s", m.MediaType, m.Config.MediaType, m.Layers[0].MediaType)
	}
}

func TestPushPullIndex(t *testing.T) {
	reg := NewRegistry(t)
	base := Image(t, testConfig(), Layer(t, Entry{Name: "f", Content: []byte("shared")}))
	idx := Index(t, map[string]v1.Image{"linux/amd64": base, "linux/arm64/v8": base})
	d := reg.PushIndex(t, "multi/arch:1", idx)
	if d != mustDigest(t, idx) {
		t.Fatal("PushIndex digest mismatch")
	}
	ref := mustRef(t, reg.Ref("multi/arch:1"))
	gotIdx, err := remote.Index(ref)
	if err != nil {
		t.Fatal(err)
	}
	im, err := gotIdx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 2 {
		t.Fatalf("index: %s with %d manifests", im.MediaType, len(im.Manifests))
	}
	plats := map[string]v1.Hash{}
	for _, desc := range im.Manifests {
		plats[desc.Platform.String()] = desc.Digest
	}
	arm, ok := plats["linux/arm64/v8"]
	if !ok || plats["linux/amd64"] == (v1.Hash{}) || arm == plats["linux/amd64"] {
		t.Fatalf("platforms: %v", plats)
	}

	img, err := remote.Image(ref, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := mustDigest(t, img); got != arm {
		t.Errorf("resolved arm64 to %s, want %s", got, arm)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "arm64" || cf.Variant != "v8" || cf.Config.User != "1000:1001" {
		t.Errorf("arm64 config: %s/%s user %q", cf.Architecture, cf.Variant, cf.Config.User)
	}
	// remote.Index GETs the index; remote.Image GETs the index again, then the child.
	if n := reg.ManifestGets(); n != 3 {
		t.Errorf("ManifestGets = %d, want 3", n)
	}

	dockerIdx := Index(t, map[string]v1.Image{"linux/amd64": DockerImage(t, v1.Config{})})
	if mt, _ := dockerIdx.MediaType(); mt != types.DockerManifestList {
		t.Errorf("docker index media type %s", mt)
	}
}

func statusOf(err error) int {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode
	}
	return 0
}

func TestBasicAuth(t *testing.T) {
	reg := NewRegistry(t, WithBasicAuth("alice", "s3cret", "private/"))
	img := Image(t, v1.Config{}, Layer(t, Entry{Name: "x", Content: []byte("x")}))
	d := reg.Push(t, "private/app:1", img)
	reg.Push(t, "public/app:1", img)

	priv := mustRef(t, reg.Ref("private/app:1"))
	if _, err := remote.Image(priv); statusOf(err) != http.StatusUnauthorized {
		t.Errorf("anonymous pull of private repo: %v", err)
	}
	if _, err := remote.Image(priv, Credentials("alice", "wrong")); statusOf(err) != http.StatusUnauthorized {
		t.Errorf("wrong-password pull of private repo: %v", err)
	}
	got, err := remote.Image(priv, Credentials("alice", "s3cret"))
	if err != nil {
		t.Fatalf("authenticated pull: %v", err)
	}
	if mustDigest(t, got) != d {
		t.Error("authenticated pull returned wrong digest")
	}
	// Blob fetches need the credentials too, not only the manifest.
	l, _ := got.Layers()
	rc, err := l[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatalf("authenticated blob read: %v", err)
	}
	_ = rc.Close()

	if _, err := remote.Image(mustRef(t, reg.Ref("public/app:1"))); err != nil {
		t.Errorf("anonymous pull of public repo: %v", err)
	}

	// What a hand-written client sees.
	for _, tc := range []struct {
		path, user, pass string
		want             int
	}{
		{"/v2/", "", "", 401},
		{"/v2/", "alice", "s3cret", 200},
		{"/v2/private/app/manifests/1", "", "", 401},
		{"/v2/private/app/blobs/" + d.String(), "", "", 401},
		{"/v2/private/app/manifests/1", "alice", "nope", 401},
		{"/v2/private/app/manifests/1", "alice", "s3cret", 200},
		{"/v2/public/app/manifests/1", "", "", 200},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+reg.Host+tc.path, nil)
		req.Header.Set("Accept", string(types.OCIManifestSchema1))
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s as %q: %d, want %d", tc.path, tc.user, resp.StatusCode, tc.want)
		}
		if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") != `Basic realm="imagetest"` {
			t.Errorf("GET %s: WWW-Authenticate %q", tc.path, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

func TestConcurrentPullsAreCountedExactly(t *testing.T) {
	reg := NewRegistry(t)
	layer := Layer(t, Entry{Name: "f", Content: bytes.Repeat([]byte("z"), 1<<16)})
	img := Image(t, v1.Config{}, layer)
	reg.Push(t, "c/img:1", img)
	ld := mustDigest(t, layer)
	ref := mustRef(t, reg.Ref("c/img:1"))

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			got, err := remote.Image(ref)
			if err != nil {
				errs <- err
				return
			}
			l, err := got.LayerByDigest(ld)
			if err != nil {
				errs <- err
				return
			}
			rc, err := l.Compressed()
			if err != nil {
				errs <- err
				return
			}
			defer func() { _ = rc.Close() }()
			if _, err := io.Copy(io.Discard, rc); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := reg.ManifestGets(); got != n {
		t.Errorf("ManifestGets = %d, want %d", got, n)
	}
	if got := reg.BlobGets(ld); got != n {
		t.Errorf("BlobGets = %d, want %d", got, n)
	}
}

func TestInterceptFaults(t *testing.T) {
	reg := NewRegistry(t)
	layer := Layer(t, Entry{Name: "f", Content: []byte("real content")})
	img := Image(t, v1.Config{}, layer)
	reg.Push(t, "f/img:1", img)
	ld := mustDigest(t, layer)
	ref := mustRef(t, reg.Ref("f/img:1"))
	noRetry := remote.WithRetryBackoff(remote.Backoff{Steps: 1})

	// Lie about a blob's content (same length, so only the digest can tell):
	// the client must detect the mismatch.
	size, _ := layer.Size()
	reg.Intercept(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/blobs/"+ld.String()) {
			_, _ = w.Write(bytes.Repeat([]byte{'x'}, int(size)))
			return true
		}
		return false
	})
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := got.LayerByDigest(ld)
	rc, err := l.Compressed()
	if err == nil {
		_, err = io.Copy(io.Discard, rc)
		_ = rc.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("lying blob not detected: %v", err)
	}
	if reg.BlobGets(ld) != 1 {
		t.Errorf("intercepted GET not counted: %d", reg.BlobGets(ld))
	}

	// Answer 500 on manifests.
	var calls atomic.Int32
	reg.Intercept(func(w http.ResponseWriter, req *http.Request) bool {
		if strings.Contains(req.URL.Path, "/manifests/") {
			calls.Add(1)
			http.Error(w, "boom", http.StatusInternalServerError)
			return true
		}
		return false
	})
	if _, err := remote.Image(ref, noRetry); statusOf(err) != http.StatusInternalServerError {
		t.Errorf("500 fault: %v", err)
	}
	if calls.Load() != 1 {
		t.Errorf("intercept ran %d times, want 1", calls.Load())
	}

	// Hang until the client gives up.
	returned := make(chan struct{}, 1)
	reg.Intercept(func(w http.ResponseWriter, req *http.Request) bool {
		<-req.Context().Done()
		returned <- struct{}{}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = remote.Image(ref, remote.WithContext(ctx), noRetry)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hang: got %v, want deadline exceeded", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("hang took %v", time.Since(start))
	}
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Error("hanging intercept did not see its request context end")
	}

	// Removing the interceptor restores normal service.
	reg.Intercept(nil)
	got, err = remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, got) != mustDigest(t, img) {
		t.Error("digest after Intercept(nil)")
	}
}

func TestCloseEndsHangingIntercept(t *testing.T) {
	reg := NewRegistry(t)
	entered := make(chan struct{})
	var once sync.Once
	reg.Intercept(func(w http.ResponseWriter, req *http.Request) bool {
		once.Do(func() { close(entered) })
		<-req.Context().Done()
		return true
	})
	clientErr := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + reg.Host + "/v2/")
		if err == nil {
			_ = resp.Body.Close()
			err = fmt.Errorf("unexpected response %d", resp.StatusCode)
		}
		clientErr <- err
	}()
	<-entered
	done := make(chan struct{})
	go func() { reg.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a hanging Intercept")
	}
	select {
	case err := <-clientErr:
		if err == nil {
			t.Error("client got no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("client still waiting after Close")
	}
	reg.Close() // idempotent
	if resp, err := http.Get("http://" + reg.Host + "/v2/"); err == nil {
		_ = resp.Body.Close()
		t.Error("registry still answering after Close")
	}
}

func TestLayerFromBytesAndRandomLayer(t *testing.T) {
	raw := []byte("this is not a tar, and not gzip either")
	bad := LayerFromBytes(t, raw, types.OCILayer)
	bd := mustDigest(t, bad)
	if bd != sha(raw) {
		t.Errorf("LayerFromBytes digest %s", bd)
	}
	if diff, _ := bad.DiffID(); diff != bd {
		t.Errorf("LayerFromBytes diffID %s", diff)
	}

	r1 := RandomFilesLayer(t, 1, 1<<20, 3)
	r1again := RandomFilesLayer(t, 1, 1<<20, 3)
	r2 := RandomFilesLayer(t, 2, 1<<20, 3)
	if mustDigest(t, r1) != mustDigest(t, r1again) || mustDigest(t, r1) == mustDigest(t, r2) {
		t.Error("RandomFilesLayer digests must depend on exactly the seed")
	}
	if size, _ := r1.Size(); size < 1<<20 {
		t.Errorf("random layer compressed to %d bytes; content is compressible", size)
	}
	rc, _ := r1.Uncompressed()
	var files int
	var total int64
	for _, h := range readTar(t, rc) {
		if h.Typeflag == tar.TypeReg {
			files++
			total += h.Size
		}
	}
	if files != 3 || total != 1<<20 {
		t.Errorf("random layer: %d files, %d bytes", files, total)
	}

	// A garbage layer still pushes and comes back byte for byte.
	reg := NewRegistry(t)
	img := Image(t, v1.Config{}, bad)
	reg.Push(t, "bad/img:1", img)
	got, err := remote.Image(mustRef(t, reg.Ref("bad/img:1")))
	if err != nil {
		t.Fatal(err)
	}
	gl, err := got.LayerByDigest(bd)
	if err != nil {
		t.Fatal(err)
	}
	crc, err := gl.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(crc)
	_ = crc.Close()
	if err != nil || !bytes.Equal(b, raw) {
		t.Errorf("garbage layer round trip: %q, %v", b, err)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.StrictValidation)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}
