package image

import (
	"archive/tar"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/husk-runtime/husk/test/imagetest"
)

func openStore(t *testing.T, regs map[string]RegistryConfig) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "images"), Options{Registries: regs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// insecure allows plain HTTP to the test registry, as an administrator
// would in the config file.
func insecure(hosts ...string) map[string]RegistryConfig {
	m := map[string]RegistryConfig{}
	for _, h := range hosts {
		m[h] = RegistryConfig{Insecure: true}
	}
	return m
}

func pull(t *testing.T, s *Store, ref string) Image {
	t.Helper()
	img, err := s.Pull(t.Context(), ref, nil)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	return img
}

func file(name, content string) imagetest.Entry {
	return imagetest.Entry{Name: name, Content: []byte(content)}
}

func dir(name string) imagetest.Entry {
	return imagetest.Entry{Name: name, Type: tar.TypeDir}
}

// snapshot lists every path under the store with its size, to show that a
// failed pull left the store exactly as it was.
func snapshot(t *testing.T, s *Store) []string {
	t.Helper()
	waitIdle(t, s)
	var out []string
	err := filepath.WalkDir(s.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %v %d", strings.TrimPrefix(p, s.Dir()), info.Mode(), info.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func assertUnchanged(t *testing.T, s *Store, before []string) {
	t.Helper()
	after := snapshot(t, s)
	if !slices.Equal(before, after) {
		t.Errorf("store changed:\nbefore %q\nafter  %q", before, after)
	}
}

func TestPullStacksLayersWithWhiteoutsAndOpaqueDirs(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	img := imagetest.Image(t, v1.Config{Cmd: []string{"/bin/sh"}},
		imagetest.Layer(t, dir("a"), file("a/gone", "1"), file("a/kept", "2"), dir("d"), file("d/old1", "3"), file("d/old2", "4")),
		imagetest.Layer(t, file("a/.wh.gone", ""), dir("d"), file("d/.wh..wh..opq", ""), file("d/new", "5")),
		imagetest.Layer(t, file("b", "6")),
	)
	reg.Push(t, "test/stack:1", img)
	s := openStore(t, insecure(reg.Host))
	got := pull(t, s, reg.Ref("test/stack:1"))
	if len(got.Layers) != 3 {
		t.Fatalf("layers = %v", got.Layers)
	}
	// overlayfs wants the top layer first.
	var lowers []string
	for i := len(got.Layers) - 1; i >= 0; i-- {
		lowers = append(lowers, s.LayerPath(got.Layers[i]))
	}
	merged := t.TempDir()
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+strings.Join(lowers, ":")); err != nil {
		t.Fatalf("overlay mount: %v", err)
	}
	defer func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmount: %v", err)
		}
	}()
	for p, want := range map[string]string{"a/kept": "2", "d/new": "5", "b": "6"} {
		b, err := os.ReadFile(filepath.Join(merged, p))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", p, b, err, want)
		}
	}
	for _, p := range []string{"a/gone", "d/old1", "d/old2", "a/.wh.gone", "d/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(merged, p)); !os.IsNotExist(err) {
			t.Errorf("%s is visible in the merged view (err %v)", p, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(merged, "d"))
	if len(entries) != 1 {
		t.Errorf("opaque dir d holds %v, want only new", entries)
	}
}

func TestPullByTagDigestAndDefaultTag(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	img := imagetest.Image(t, v1.Config{User: "1000:1000"}, imagetest.Layer(t, file("f", "x")))
	d := reg.Push(t, "test/app:1.0", img)
	reg.Push(t, "test/app:latest", img)
	s := openStore(t, insecure(reg.Host))

	byTag := pull(t, s, reg.Ref("test/app:1.0"))
	cfgDigest, _ := img.ConfigName()
	if byTag.ID != cfgDigest.String() {
		t.Errorf("id = %s, want the config digest %s", byTag.ID, cfgDigest)
	}
	byDigest := pull(t, s, reg.Ref("test/app@"+d.String()))
	latest := pull(t, s, reg.Ref("test/app"))
	if byDigest.ID != byTag.ID || latest.ID != byTag.ID {
		t.Errorf("ids differ: %s %s %s", byTag.ID, byDigest.ID, latest.ID)
	}
	final, err := s.Get(byTag.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantTags := []string{reg.Ref("test/app:1.0"), reg.Ref("test/app:latest")}
	if !slices.Equal(final.RepoTags, wantTags) {
		t.Errorf("tags = %v, want %v", final.RepoTags, wantTags)
	}
	if !slices.Equal(final.RepoDigests, []string{reg.Ref("test/app@" + d.String())}) {
		t.Errorf("digests = %v", final.RepoDigests)
	}
	if final.User != "1000:1000" || final.Size == 0 {
		t.Errorf("user %q size %d", final.User, final.Size)
	}
	for _, ref := range []string{byTag.ID, strings.TrimPrefix(byTag.ID, "sha256:"), reg.Ref("test/app:1.0"), reg.Ref("test/app@" + d.String()), reg.Ref("test/app")} {
		if got, err := s.Get(ref); err != nil || got.ID != byTag.ID {
			t.Errorf("Get(%s) = %s, %v", ref, got.ID, err)
		}
	}
	if _, err := s.Get(reg.Ref("test/app:2.0")); !errdefs.IsNotFound(err) {
		t.Errorf("Get of a missing tag: %v, want not found", err)
	}
}

func TestParseReferenceExpandsDockerShortNames(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                   "docker.io/library/busybox:latest",
		"busybox:1.36":              "docker.io/library/busybox:1.36",
		"user/app":                  "docker.io/user/app:latest",
		"registry.k8s.io/pause:3.9": "registry.k8s.io/pause:3.9",
		"localhost:5000/a/b":        "localhost:5000/a/b:latest",
		"busybox:1@sha256:" + strings.Repeat("a", 64): "docker.io/library/busybox@sha256:" + strings.Repeat("a", 64),
	} {
		got, err := ParseReference(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseReference(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "docker://busybox", "oci-archive:/x.tar", "Busybox", "busybox:", "a//b", "busybox@sha256:123", strings.Repeat("a", 64)} {
		if _, err := ParseReference(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseReference(%q) = %v, want invalid argument", bad, err)
		}
	}
}

func TestShortNameIsPulledThroughDockerHubMirror(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	img := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("hello", "hub")))
	reg.Push(t, "library/busybox:latest", img)
	s := openStore(t, map[string]RegistryConfig{"docker.io": {Mirrors: []string{"http://" + reg.Host}}})
	got := pull(t, s, "busybox")
	if !slices.Equal(got.RepoTags, []string{"docker.io/library/busybox:latest"}) {
		t.Errorf("tags = %v", got.RepoTags)
	}
	if _, err := s.Get("busybox:latest"); err != nil {
		t.Errorf("Get by short name: %v", err)
	}
}

func TestMirrorsAreTriedInOrderBeforeTheRegistry(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	img := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("m", "mirror")))
	reg.Push(t, "team/app:v1", img)
	// The first mirror refuses connections, the registry itself does not
	// resolve: only the second mirror can serve the image.
	dead := "http://127.0.0.1:1"
	s := openStore(t, map[string]RegistryConfig{"registry.unreachable.invalid": {Mirrors: []string{dead, "http://" + reg.Host}}})
	got := pull(t, s, "registry.unreachable.invalid/team/app:v1")
	if !slices.Equal(got.RepoTags, []string{"registry.unreachable.invalid/team/app:v1"}) {
		t.Errorf("tags = %v", got.RepoTags)
	}
	if reg.ManifestGets() != 1 {
		t.Errorf("manifest GETs on the mirror = %d", reg.ManifestGets())
	}
}

func TestPlainHTTPOnlyWhereConfigured(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "test/app:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "x"))))
	s := openStore(t, nil)
	before := snapshot(t, s)
	_, err := s.Pull(t.Context(), reg.Ref("test/app:1"), nil)
	if err == nil || !strings.Contains(err.Error(), "plain HTTP") {
		t.Fatalf("pull over unconfigured plain HTTP: %v", err)
	}
	if reg.ManifestGets() != 0 {
		t.Errorf("the registry was asked for a manifest over plain HTTP")
	}
	assertUnchanged(t, s, before)
}

func TestPullResolvesManifestListToThisPlatform(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	mine := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("arch", runtime.GOARCH)))
	theirs := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("arch", other)))
	idx := imagetest.Index(t, map[string]v1.Image{"linux/" + runtime.GOARCH: mine, "linux/" + other: theirs})
	d := reg.PushIndex(t, "test/multi:1", idx)
	s := openStore(t, insecure(reg.Host))
	got := pull(t, s, reg.Ref("test/multi:1"))
	cfg, _, err := s.Config(got.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != runtime.GOARCH || cfg.OS != "linux" {
		t.Errorf("pulled %s/%s", cfg.OS, cfg.Architecture)
	}
	b, err := os.ReadFile(filepath.Join(s.LayerPath(got.Layers[0]), "arch"))
	if err != nil || string(b) != runtime.GOARCH {
		t.Errorf("layer content %q, %v", b, err)
	}
	if !slices.Equal(got.RepoDigests, []string{reg.Ref("test/multi@" + d.String())}) {
		t.Errorf("repo digest %v, want the index digest %s", got.RepoDigests, d)
	}
	otherLayer, _ := theirs.Layers()
	od, _ := otherLayer[0].Digest()
	if reg.BlobGets(od) != 0 {
		t.Errorf("the other platform's layer was fetched")
	}
}

func TestPrivateRepositoryNeedsCredentials(t *testing.T) {
	reg := imagetest.NewRegistry(t, imagetest.WithBasicAuth("alice", "s3cret", "private/"))
	reg.Push(t, "private/app:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("secret", "x"))))
	s := openStore(t, insecure(reg.Host))
	before := snapshot(t, s)
	_, err := s.Pull(t.Context(), reg.Ref("private/app:1"), nil)
	if !errdefs.IsUnauthorized(err) {
		t.Fatalf("anonymous pull: %v, want unauthenticated", err)
	}
	_, err = s.Pull(t.Context(), reg.Ref("private/app:1"), &Auth{Username: "alice", Password: "wrong"})
	if !errdefs.IsUnauthorized(err) {
		t.Fatalf("wrong password: %v, want unauthenticated", err)
	}
	assertUnchanged(t, s, before)
	if _, err := s.Pull(t.Context(), reg.Ref("private/app:1"), &Auth{Username: "alice", Password: "s3cret"}); err != nil {
		t.Fatalf("pull with username/password: %v", err)
	}
	encoded := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	if _, err := s.Pull(t.Context(), reg.Ref("private/app:1"), &Auth{Auth: encoded}); err != nil {
		t.Fatalf("pull with auth: %v", err)
	}
}

func TestConcurrentPullsFetchEachBlobOnce(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	img := imagetest.Image(t, v1.Config{},
		imagetest.RandomFilesLayer(t, 1, 1<<20, 4), imagetest.RandomFilesLayer(t, 2, 1<<20, 4), imagetest.RandomFilesLayer(t, 3, 1<<20, 4))
	reg.Push(t, "test/big:1", img)
	s := openStore(t, insecure(reg.Host))
	var wg sync.WaitGroup
	ids := make([]string, 20)
	errs := make([]error, 20)
	for i := range 20 {
		wg.Go(func() {
			got, err := s.Pull(t.Context(), reg.Ref("test/big:1"), nil)
			ids[i], errs[i] = got.ID, err
		})
	}
	wg.Wait()
	for i := range 20 {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("pull %d: %s, %v", i, ids[i], errs[i])
		}
	}
	layers, _ := img.Layers()
	cfg, _ := img.ConfigName()
	for _, l := range layers {
		d, _ := l.Digest()
		if n := reg.BlobGets(d); n != 1 {
			t.Errorf("layer %s fetched %d times", d, n)
		}
	}
	if n := reg.BlobGets(cfg); n != 1 {
		t.Errorf("config fetched %d times", n)
	}
	// Pulled again later: the manifest is asked for, no blob is fetched.
	pull(t, s, reg.Ref("test/big:1"))
	for _, l := range layers {
		d, _ := l.Digest()
		if n := reg.BlobGets(d); n != 1 {
			t.Errorf("layer %s fetched %d times after a second pull", d, n)
		}
	}
}

func TestImagesSurviveReopen(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "test/app:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "x"))))
	dir := filepath.Join(t.TempDir(), "images")
	s, err := Open(dir, Options{Registries: insecure(reg.Host)})
	if err != nil {
		t.Fatal(err)
	}
	first := pull(t, s, reg.Ref("test/app:1"))
	_ = s.Close()
	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s2.Close() }()
	again, err := s2.Get(reg.Ref("test/app:1"))
	if err != nil || again.ID != first.ID || !slices.Equal(again.Layers, first.Layers) {
		t.Fatalf("after reopen: %+v, %v; want %+v", again, err, first)
	}
	if _, err := os.Stat(s2.LayerPath(first.Layers[0])); err != nil {
		t.Errorf("layer gone after reopen: %v", err)
	}
}

// An unpacked layer can hold a setuid-root binary or a device node: no
// other user of the host may reach one through the store.
func TestLayersAreOutOfOtherUsersReach(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "test/app:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("secret", "x"))))
	s := openStore(t, insecure(reg.Host))
	img := pull(t, s, reg.Ref("test/app:1"))
	f := filepath.Join(s.LayerPath(img.Layers[0]), "secret")
	if _, err := os.Stat(f); err != nil {
		t.Fatal(err)
	}
	// The test's own directories are private: open them as /var/lib is.
	for d := filepath.Dir(s.Dir()); d != filepath.Clean(os.TempDir()); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("cat", f)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("nobody reads a layer's file: %v %s", err, out)
	}
	// Nothing the store writes is left beside the index.
	entries, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !slices.Contains([]string{"blobs", "layers", "tmp", "images.json", ".durable"}, e.Name()) {
			t.Errorf("unexpected %s in the store's directory", e.Name())
		}
	}
}

// Removing an image by one of its tags removes it with every tag, as
// api.proto's RemoveImage says.
func TestRemoveByOneTagRemovesAllTags(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	img := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "x")))
	reg.Push(t, "test/app:1", img)
	reg.Push(t, "test/app:2", img)
	s := openStore(t, insecure(reg.Host))
	empty := snapshot(t, s)
	got := pull(t, s, reg.Ref("test/app:1"))
	pull(t, s, reg.Ref("test/app:2"))

	if both, err := s.Get(got.ID); err != nil || len(both.RepoTags) != 2 {
		t.Fatalf("one image with both tags: %+v, %v", both, err)
	}
	if err := s.Remove(reg.Ref("test/app:1")); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{got.ID, reg.Ref("test/app:1"), reg.Ref("test/app:2")} {
		if _, err := s.Get(ref); !errdefs.IsNotFound(err) {
			t.Errorf("%s still there after removing one tag: %v", ref, err)
		}
	}
	if err := s.Remove(got.ID); err != nil {
		t.Errorf("removing a removed image: %v", err)
	}
	if err := s.Remove("docker.io/library/never:pulled"); err != nil {
		t.Errorf("removing a missing image: %v", err)
	}
	// Layers and blobs went with the image; only the (now empty) index
	// remains of it.
	after := slices.DeleteFunc(snapshot(t, s), func(l string) bool { return strings.HasPrefix(l, "/images.json ") })
	if !slices.Equal(empty, after) {
		t.Errorf("store after removal %q, want %q", after, empty)
	}
}

func TestRemoveByDigestRemovesTheImage(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	img := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "x")))
	d := reg.Push(t, "test/app:1", img)
	s := openStore(t, insecure(reg.Host))
	pull(t, s, reg.Ref("test/app:1"))
	if err := s.Remove(reg.Ref("test/app@" + d.String())); err != nil {
		t.Fatal(err)
	}
	if len(s.List()) != 0 {
		t.Errorf("images left: %v", s.List())
	}
}

func TestUsageCountsLayersAndBlobs(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "test/app:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", strings.Repeat("x", 10000)))))
	s := openStore(t, insecure(reg.Host))
	u0, err := s.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pull(t, s, reg.Ref("test/app:1"))
	u1, err := s.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if u1.Bytes < u0.Bytes+10000 || u1.Inodes <= u0.Inodes {
		t.Errorf("usage before %+v after %+v", u0, u1)
	}
}

// Hard links of one file count once: an image of busybox's applets, each
// a link of one binary, is not the binary's size times their number.
func TestUsageCountsHardLinksOnce(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "test/links:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t,
		file("bin/busybox", strings.Repeat("x", 100000)),
		imagetest.Entry{Name: "bin/sh", Type: tar.TypeLink, Linkname: "bin/busybox"},
		imagetest.Entry{Name: "bin/ls", Type: tar.TypeLink, Linkname: "bin/busybox"})))
	s := openStore(t, insecure(reg.Host))
	u0, err := s.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pull(t, s, reg.Ref("test/links:1"))
	u1, err := s.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// The layer's 100000 bytes once, and its blobs (a few KiB at most).
	if grew := u1.Bytes - u0.Bytes; grew < 100000 || grew >= 200000 {
		t.Errorf("the store grew by %d bytes for a 100000-byte file with two more links", grew)
	}
}

// A tag that moves to a new image is taken from the old one, which stays
// (kubelet removes unused images by id).
func TestRetagMovesTheTag(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	s := openStore(t, insecure(reg.Host))
	reg.Push(t, "test/app:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("v", "1"))))
	old := pull(t, s, reg.Ref("test/app:1"))
	reg.Push(t, "test/app:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("v", "2"))))
	cur := pull(t, s, reg.Ref("test/app:1"))
	if cur.ID == old.ID {
		t.Fatal("same image after the tag moved")
	}
	o, err := s.Get(old.ID)
	if err != nil || len(o.RepoTags) != 0 {
		t.Errorf("old image: %+v, %v", o, err)
	}
}

func TestPullErrorsLeaveStoreUnchanged(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	good := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "good")))
	goodDigest := reg.Push(t, "test/good:1", good)
	other := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "other")))
	otherDigest := reg.Push(t, "test/other:1", other)
	garbage := []byte(strings.Repeat("this is not a tar archive. ", 100))
	reg.Push(t, "test/nottar:1", imagetest.Image(t, v1.Config{}, imagetest.LayerFromBytes(t, garbage, "application/vnd.oci.image.layer.v1.tar")))
	badImg := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("g", "blob")))
	reg.Push(t, "test/badblob:1", badImg)
	badLayers, _ := badImg.Layers()
	badBlob, _ := badLayers[0].Digest()

	for _, tc := range []struct {
		name      string
		ref       string
		intercept func(w http.ResponseWriter, r *http.Request) bool
		timeout   time.Duration
		want      func(error) bool
	}{
		{name: "layer is not a tar", ref: "test/nottar:1", want: errdefs.IsDataLoss},
		{
			name: "manifest lies about its digest", ref: "test/good@" + goodDigest.String(),
			intercept: func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				m, _ := other.RawManifest()
				w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				w.Header().Set("Docker-Content-Digest", goodDigest.String())
				_, _ = w.Write(m)
				return true
			},
			want: errdefs.IsDataLoss,
		},
		{
			name: "blob does not match its digest", ref: "test/badblob:1",
			intercept: func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasSuffix(r.URL.Path, "/blobs/"+badBlob.String()) {
					return false
				}
				l, _ := other.Layers()
				rc, err := l[0].Compressed()
				if err != nil {
					return false
				}
				b, _ := io.ReadAll(rc)
				_ = rc.Close()
				_, _ = w.Write(b)
				return true
			},
			want: errdefs.IsDataLoss,
		},
		{
			name: "registry answers garbage", ref: "test/good:1",
			intercept: func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				_, _ = w.Write([]byte("{garbage"))
				return true
			},
			// A document that does not parse is not what its digest
			// promised.
			want: errdefs.IsDataLoss,
		},
		{
			name: "registry fails", ref: "test/good:1",
			intercept: func(w http.ResponseWriter, r *http.Request) bool {
				w.WriteHeader(http.StatusInternalServerError)
				return true
			},
			want: errdefs.IsUnavailable,
		},
		{
			name: "registry hangs", ref: "test/good:1", timeout: 500 * time.Millisecond,
			intercept: func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/blobs/") {
					return false
				}
				<-r.Context().Done()
				return true
			},
			want: func(err error) bool { return errors.Is(err, context.DeadlineExceeded) },
		},
		{name: "missing tag", ref: "test/good:nope", want: errdefs.IsNotFound},
		{name: "missing repository", ref: "test/nothing:1", want: errdefs.IsNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, insecure(reg.Host))
			// Something already in the store must stay as it is.
			pull(t, s, reg.Ref("test/other@"+otherDigest.String()))
			before := snapshot(t, s)
			reg.Intercept(tc.intercept)
			defer reg.Intercept(nil)
			ctx := t.Context()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			_, err := s.Pull(ctx, reg.Ref(tc.ref), nil)
			if !tc.want(err) {
				t.Fatalf("pull: %v", err)
			}
			// The pull's own cleanup may still be running after the caller
			// gave up; it must end with nothing left.
			waitForEmptyTmp(t, s)
			assertUnchanged(t, s, before)
		})
	}
}

func waitForEmptyTmp(t *testing.T, s *Store) {
	t.Helper()
	for range 100 {
		entries, _ := os.ReadDir(s.tmpDir())
		if len(entries) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	entries, _ := os.ReadDir(s.tmpDir())
	t.Fatalf("tmp not emptied: %v", entries)
}

// waitIdle waits for the store's background removals and syncs.
func waitIdle(t *testing.T, s *Store) {
	t.Helper()
	for range 500 {
		s.removing.Wait()
		s.sync.mu.Lock()
		idle := !s.sync.running && len(s.sync.pending) == 0
		s.sync.mu.Unlock()
		if idle {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("store did not become idle")
}

// Layers a container runs from stay when their image is removed, also
// across a reopen; once no container uses them, they go.
func TestLayersInUseSurviveRemovalAndReopen(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "test/app:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "x"))))
	dir := filepath.Join(t.TempDir(), "images")
	s, err := Open(dir, Options{Registries: insecure(reg.Host)})
	if err != nil {
		t.Fatal(err)
	}
	img := pull(t, s, reg.Ref("test/app:1"))
	inUse := func() []digest.Digest { return img.Layers }
	s.SetInUse(inUse)
	if err := s.Remove(img.ID); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, s)
	if _, err := os.Stat(s.LayerPath(img.Layers[0])); err != nil {
		t.Fatalf("layer in use removed with its image: %v", err)
	}
	_ = s.Close()
	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s2.Close() }()
	s2.SetInUse(inUse)
	waitIdle(t, s2)
	if _, err := os.Stat(s2.LayerPath(img.Layers[0])); err != nil {
		t.Fatalf("layer in use removed at reopen: %v", err)
	}
	s2.SetInUse(func() []digest.Digest { return nil })
	waitIdle(t, s2)
	if _, err := os.Stat(s2.LayerPath(img.Layers[0])); !os.IsNotExist(err) {
		t.Errorf("unused layer kept: %v", err)
	}
}
