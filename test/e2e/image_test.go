package e2e

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// newTestImage serves a two-layer image (a deleted file, an opaque
// directory, a USER) as repoTag from a new loopback registry.
func newTestImage(t *testing.T, repoTag string) (*imagetest.Registry, string) {
	t.Helper()
	reg := imagetest.NewRegistry(t)
	reg.Push(t, repoTag, testImage(t))
	return reg, reg.Ref(repoTag)
}

func testImage(t *testing.T) v1.Image {
	return imagetest.Image(t, v1.Config{User: "1234", Cmd: []string{"/bin/true"}},
		imagetest.Layer(t,
			imagetest.Entry{Name: "etc", Type: tar.TypeDir},
			imagetest.Entry{Name: "etc/passwd", Content: []byte("root:x:0:0::/root:/bin/sh\n")},
			imagetest.Entry{Name: "old", Content: []byte("gone")},
		),
		imagetest.Layer(t,
			imagetest.Entry{Name: ".wh.old"},
			imagetest.Entry{Name: "data", Content: []byte(strings.Repeat("d", 4096))},
		),
	)
}

func pullImage(t *testing.T, d *daemon, ref string) string {
	t.Helper()
	resp, err := d.images.PullImage(t.Context(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		t.Fatalf("PullImage %s: %v", ref, err)
	}
	return resp.ImageRef
}

func imageStatus(t *testing.T, d *daemon, ref string) *runtimeapi.Image {
	t.Helper()
	resp, err := d.images.ImageStatus(t.Context(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		t.Fatalf("ImageStatus %s: %v", ref, err)
	}
	return resp.Image
}

// slowBlobs delays every blob download by delay; it counts the blob
// requests that began.
func slowBlobs(reg *imagetest.Registry, delay time.Duration) *atomic.Int32 {
	var n atomic.Int32
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet {
			n.Add(1)
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return true
			}
		}
		return false
	})
	return &n
}

func TestCrictlPullImagesInspectRemove(t *testing.T) {
	reg, ref := newTestImage(t, "test/crictl:1.0")
	// Pinned by a prefix of its name: kubelet's garbage collection must
	// leave it alone.
	d := newDaemon(t, fmt.Sprintf("pinned_images = [%q]\n", reg.Host+"/test/crictl:*")+insecureConfig(reg.Host))

	out := d.mustCrictl("pull", ref)
	if !strings.Contains(out, "sha256:") {
		t.Errorf("crictl pull: %s", out)
	}
	out = d.mustCrictl("images")
	if !strings.Contains(out, reg.Host+"/test/crictl") || !strings.Contains(out, "1.0") {
		t.Errorf("crictl images:\n%s", out)
	}
	var inspect struct {
		Status struct {
			ID       string   `json:"id"`
			RepoTags []string `json:"repoTags"`
			UID      struct {
				Value string `json:"value"`
			} `json:"uid"`
			Size   string `json:"size"`
			Pinned bool   `json:"pinned"`
		} `json:"status"`
		Info struct {
			ImageSpec struct {
				Config struct {
					Cmd []string `json:"Cmd"`
				} `json:"config"`
			} `json:"imageSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(d.mustCrictl("inspecti", ref)), &inspect); err != nil {
		t.Fatal(err)
	}
	if inspect.Status.UID.Value != "1234" || inspect.Status.Size == "0" || !inspect.Status.Pinned || len(inspect.Info.ImageSpec.Config.Cmd) != 1 {
		t.Errorf("crictl inspecti: %+v", inspect)
	}
	var fsinfo struct {
		Status struct {
			ImageFilesystems []struct {
				FsID struct {
					Mountpoint string `json:"mountpoint"`
				} `json:"fsId"`
				UsedBytes struct {
					Value uint64 `json:"value,string"`
				} `json:"usedBytes"`
				InodesUsed struct {
					Value uint64 `json:"value,string"`
				} `json:"inodesUsed"`
			} `json:"imageFilesystems"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(d.mustCrictl("imagefsinfo")), &fsinfo); err != nil {
		t.Fatal(err)
	}
	// The image's layer holds a few small files: at least a block each for
	// the layer's directory and its files, and an inode each.
	if fs := fsinfo.Status.ImageFilesystems; len(fs) != 1 || !strings.HasPrefix(fs[0].FsID.Mountpoint, d.root) || fs[0].UsedBytes.Value < 4096 || fs[0].InodesUsed.Value < 2 {
		t.Errorf("crictl imagefsinfo: %+v", fsinfo)
	}
	d.mustCrictl("rmi", ref)
	if out := d.mustCrictl("images", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("images left after rmi: %q", out)
	}
}

func TestCrictlPullWithCredentialsNeverLogsThem(t *testing.T) {
	reg := imagetest.NewRegistry(t, imagetest.WithBasicAuth("alice", "pa55-w0rd-xyz", "private/"))
	reg.Push(t, "private/app:1", testImage(t))
	d := newDaemon(t, insecureConfig(reg.Host))
	if _, err := d.crictl("pull", reg.Ref("private/app:1")); err == nil {
		t.Fatal("pulled a private image without credentials")
	}
	d.mustCrictl("pull", "--creds", "alice:pa55-w0rd-xyz", reg.Ref("private/app:1"))
	if strings.Contains(d.log(), "pa55-w0rd-xyz") {
		t.Error("the password is in the daemon's log")
	}
	if err := filepath.Walk(d.dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() || p == d.logPath {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), "pa55-w0rd-xyz") {
			t.Errorf("the password is stored in %s", p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestImageSurvivesRestart(t *testing.T) {
	reg, ref := newTestImage(t, "test/restart:1")
	d := newDaemon(t, insecureConfig(reg.Host))
	id := pullImage(t, d, ref)
	d.restart()
	img := imageStatus(t, d, ref)
	if img == nil || img.Id != id {
		t.Fatalf("after restart: %v, want id %s", img, id)
	}
}

func TestConcurrentPullsOverTheSocketFetchEachBlobOnce(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	img := imagetest.Image(t, v1.Config{}, imagetest.RandomFilesLayer(t, 7, 2<<20, 8), imagetest.RandomFilesLayer(t, 8, 2<<20, 8))
	reg.Push(t, "test/many:1", img)
	d := newDaemon(t, insecureConfig(reg.Host))
	var wg sync.WaitGroup
	ids := make(chan string, 20)
	for range 20 {
		wg.Go(func() {
			resp, err := d.images.PullImage(t.Context(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: reg.Ref("test/many:1")}})
			if err != nil {
				t.Errorf("pull: %v", err)
				return
			}
			ids <- resp.ImageRef
		})
	}
	wg.Wait()
	close(ids)
	first := ""
	for id := range ids {
		if first == "" {
			first = id
		}
		if id != first {
			t.Errorf("different ids %s and %s", first, id)
		}
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		dg, _ := l.Digest()
		if n := reg.BlobGets(dg); n != 1 {
			t.Errorf("layer %s fetched %d times", dg, n)
		}
	}
}

func TestBadImageRequestsGetClearCodes(t *testing.T) {
	reg, ref := newTestImage(t, "test/bad:1")
	d := newDaemon(t, insecureConfig(reg.Host))
	pullImage(t, d, ref)
	for _, tc := range []struct {
		ref   string
		code  codes.Code
		field string
	}{
		{"", codes.InvalidArgument, "image.image"},
		{"docker://busybox", codes.InvalidArgument, "image.image"},
		{"UPPER/case", codes.InvalidArgument, "image.image"},
		{"a b", codes.InvalidArgument, "image.image"},
		{reg.Ref("test/bad:missing"), codes.NotFound, ""},
	} {
		_, err := d.images.PullImage(t.Context(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: tc.ref}})
		if status.Code(err) != tc.code || !strings.Contains(fmt.Sprint(err), tc.field) {
			t.Errorf("PullImage(%q) = %v, want %v naming %q", tc.ref, err, tc.code, tc.field)
		}
	}
	if _, err := d.images.PullImage(t.Context(), &runtimeapi.PullImageRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("PullImage without an image: %v", err)
	}
	if st, err := d.images.ImageStatus(t.Context(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "never/pulled:1"}}); err != nil || st.Image != nil {
		t.Errorf("ImageStatus of a missing image: %v, %v", st, err)
	}
	if _, err := d.images.RemoveImage(t.Context(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: "never/pulled:1"}}); err != nil {
		t.Errorf("RemoveImage of a missing image: %v", err)
	}
	// The image pulled before is untouched by all of that.
	if img := imageStatus(t, d, ref); img == nil {
		t.Error("the image pulled first is gone")
	}
}

func TestPullPastDeadlineLeavesNothing(t *testing.T) {
	reg, ref := newTestImage(t, "test/hang:1")
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		<-r.Context().Done()
		return true
	})
	d := newDaemon(t, insecureConfig(reg.Host))
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err := d.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("pull past its deadline: %v", err)
	}
	waitFor(t, func() bool { return dirEmpty(t, filepath.Join(d.root, "images", "tmp")) })
	reg.Intercept(nil)
	if img := imageStatus(t, d, ref); img != nil {
		t.Errorf("a timed-out pull left an image: %v", img)
	}
	pullImage(t, d, ref)
}

// The daemon is killed in the middle of a pull, once before anything was
// stored and once when one layer is stored but the other
// layer is not; when it comes back the image is not there (nor any part of
// it), and pulling again works.
func TestSIGKILLDuringPullLeavesNoHalfImage(t *testing.T) {
	for _, tc := range []struct {
		name string
		// held names the blobs the registry holds back; stored says when
		// the pull is far enough along to be killed.
		held   func(img v1.Image) []string
		stored func(d *daemon) bool
	}{
		{
			name: "before any blob",
			held: func(v1.Image) []string { return []string{"/blobs/"} },
		},
		{
			name: "after a layer",
			held: func(img v1.Image) []string {
				layers, err := img.Layers()
				if err != nil {
					t.Fatal(err)
				}
				last, err := layers[len(layers)-1].Digest()
				if err != nil {
					t.Fatal(err)
				}
				return []string{"/blobs/" + last.String()}
			},
			stored: func(d *daemon) bool {
				return !dirEmpty(t, filepath.Join(d.root, "images", "layers"))
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := imagetest.NewRegistry(t)
			img := testImage(t)
			ref := reg.Ref("test/killed:1")
			reg.Push(t, "test/killed:1", img)
			held := tc.held(img)
			var started atomic.Int32
			reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet || !slices.ContainsFunc(held, func(h string) bool { return strings.Contains(r.URL.Path, h) }) {
					return false
				}
				started.Add(1)
				<-r.Context().Done()
				return true
			})
			d := newDaemon(t, insecureConfig(reg.Host))
			go func() {
				_, _ = d.images.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			}()
			waitFor(t, func() bool { return started.Load() > 0 && (tc.stored == nil || tc.stored(d)) })
			_ = d.stop(syscall.SIGKILL)
			reg.Intercept(nil)
			d.start()
			if img := imageStatus(t, d, ref); img != nil {
				t.Fatalf("half-pulled image after restart: %v", img)
			}
			list, err := d.images.ListImages(t.Context(), &runtimeapi.ListImagesRequest{})
			if err != nil || len(list.Images) != 0 {
				t.Fatalf("ListImages after restart: %v, %v", list, err)
			}
			// What the killed pull stored is collected in the background.
			waitFor(t, func() bool {
				for _, sub := range []string{"tmp", "layers", "blobs/sha256"} {
					if !dirEmpty(t, filepath.Join(d.root, "images", sub)) {
						return false
					}
				}
				return true
			})
			pullImage(t, d, ref)
		})
	}
}

func dirEmpty(t *testing.T, dir string) bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries) == 0
}

func TestListImagesFilter(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "test/one:1", testImage(t))
	reg.Push(t, "test/two:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, imagetest.Entry{Name: "two", Content: []byte("2")})))
	d := newDaemon(t, insecureConfig(reg.Host))
	one := pullImage(t, d, reg.Ref("test/one:1"))
	pullImage(t, d, reg.Ref("test/two:1"))
	all, err := d.images.ListImages(t.Context(), &runtimeapi.ListImagesRequest{})
	if err != nil || len(all.Images) != 2 {
		t.Fatalf("ListImages: %v, %v", all, err)
	}
	for _, f := range []string{reg.Ref("test/one:1"), one, strings.TrimPrefix(one, "sha256:")} {
		got, err := d.images.ListImages(t.Context(), &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: f}}})
		if err != nil || len(got.Images) != 1 || got.Images[0].Id != one {
			t.Errorf("ListImages(filter %s) = %v, %v", f, got, err)
		}
	}
	got, err := d.images.ListImages(t.Context(), &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "not/there:1"}}})
	if err != nil || len(got.Images) != 0 {
		t.Errorf("ListImages(filter not/there) = %v, %v", got, err)
	}
}

// Pulling registry.k8s.io/pause:3.10 works offline through a mirror, as a
// kind node behind a pull-through cache would.
func TestCrictlPullThroughMirrorOfUnreachableRegistry(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "pause:3.10", testImage(t))
	d := newDaemon(t, fmt.Sprintf("[registry.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:1\", \"http://%s\"]\n", reg.Host))
	d.mustCrictl("pull", "registry.k8s.io/pause:3.10")
	img := imageStatus(t, d, "registry.k8s.io/pause:3.10")
	if img == nil || len(img.RepoTags) != 1 || img.RepoTags[0] != "registry.k8s.io/pause:3.10" {
		t.Fatalf("image through the mirror: %v", img)
	}
}
