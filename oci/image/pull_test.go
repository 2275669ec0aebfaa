package image

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// sharedLayerImages serves two images that share their first layer, and
// returns that layer's digest and bytes.
func sharedLayerImages(t *testing.T, reg *imagetest.Registry) (v1.Hash, []byte) {
	t.Helper()
	shared := imagetest.RandomFilesLayer(t, 21, 2<<20, 4)
	reg.Push(t, "test/x:1", imagetest.Image(t, v1.Config{}, shared, imagetest.Layer(t, file("x", "x"))))
	reg.Push(t, "test/y:1", imagetest.Image(t, v1.Config{}, shared, imagetest.Layer(t, file("y", "y"))))
	d, _ := shared.Digest()
	rc, err := shared.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return d, b
}

// slowBlob serves blob d in 20 pieces, one every step, and counts the
// requests that began.
func slowBlob(reg *imagetest.Registry, d v1.Hash, content []byte, step time.Duration) *atomic.Int32 {
	var started atomic.Int32
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			return false
		}
		started.Add(1)
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		chunk := len(content)/20 + 1
		for off := 0; off < len(content); off += chunk {
			select {
			case <-time.After(step):
			case <-r.Context().Done():
				return true
			}
			_, _ = w.Write(content[off:min(off+chunk, len(content))])
			w.(http.Flusher).Flush()
		}
		return true
	})
	return &started
}

// One caller giving up must not fail another pull that waits for the same
// layer download.
func TestImpatientCallerDoesNotFailAnotherSharingALayer(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	d, content := sharedLayerImages(t, reg)
	started := slowBlob(reg, d, content, 30*time.Millisecond)
	s := openStore(t, insecure(reg.Host))

	ctx, cancel := context.WithCancel(t.Context())
	xerr := make(chan error, 1)
	go func() {
		_, err := s.Pull(ctx, reg.Ref("test/x:1"), nil)
		xerr <- err
	}()
	waitUntil(t, func() bool { return started.Load() > 0 })
	yerr := make(chan error, 1)
	go func() {
		_, err := s.Pull(t.Context(), reg.Ref("test/y:1"), nil)
		yerr <- err
	}()
	time.Sleep(100 * time.Millisecond) // y joins the download of the shared layer
	cancel()
	if err := <-xerr; !errors.Is(err, context.Canceled) {
		t.Errorf("the impatient pull: %v", err)
	}
	if err := <-yerr; err != nil {
		t.Fatalf("the patient pull failed: %v", err)
	}
	if n := reg.BlobGets(d); n != 1 {
		t.Errorf("shared layer fetched %d times", n)
	}
}

// A pull waiting for a layer that another pull downloads, slowly but
// steadily, is not stalled.
func TestWaitingForASharedLayerIsNotAStall(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	d, content := sharedLayerImages(t, reg)
	started := slowBlob(reg, d, content, 50*time.Millisecond) // 1 s in all
	s, err := Open(filepath.Join(t.TempDir(), "images"), Options{Registries: insecure(reg.Host), ProgressTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Go(func() { _, errs[0] = s.Pull(t.Context(), reg.Ref("test/x:1"), nil) })
	waitUntil(t, func() bool { return started.Load() > 0 })
	wg.Go(func() { _, errs[1] = s.Pull(t.Context(), reg.Ref("test/y:1"), nil) })
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("pulls: %v", errs)
	}
}

// A pull whose second layer fails leaves neither its first layer nor any
// blob behind.
func TestFailedMultiLayerPullLeavesNothing(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	second := imagetest.Layer(t, file("second", "2"))
	reg.Push(t, "test/two:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("first", "1")), second))
	bad, _ := second.Digest()
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/blobs/"+bad.String()) {
			return false
		}
		w.WriteHeader(http.StatusNotFound)
		return true
	})
	s := openStore(t, insecure(reg.Host))
	before := snapshot(t, s)
	if _, err := s.Pull(t.Context(), reg.Ref("test/two:1"), nil); err == nil {
		t.Fatal("pull succeeded")
	}
	waitForEmptyTmp(t, s)
	assertUnchanged(t, s, before)
}

// Credentials are for the registry: a mirror never sees them.
func TestCredentialsAreNotSentToMirrors(t *testing.T) {
	mirror := imagetest.NewRegistry(t, imagetest.WithBasicAuth("alice", "s3cret", "private/"))
	mirror.Push(t, "private/app:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "x"))))
	var sawAuth atomic.Bool
	mirror.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") != "" {
			sawAuth.Store(true)
		}
		return false
	})
	s := openStore(t, map[string]RegistryConfig{"registry.unreachable.invalid": {Mirrors: []string{"http://" + mirror.Host}}})
	_, err := s.Pull(t.Context(), "registry.unreachable.invalid/private/app:1", &Auth{Username: "alice", Password: "s3cret"})
	if err == nil {
		t.Fatal("pulled from a mirror that needs credentials")
	}
	if sawAuth.Load() {
		t.Error("the mirror received the registry's credentials")
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
