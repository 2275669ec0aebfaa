package e2e

import (
	"archive/tar"
	"context"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// An image volume (a CRI mount of an image, KEP 4639): the image's files,
// read-only, at the mount's path, or one directory of it with
// image_sub_path; ContainerStatus tells which image; the image's layers
// stay while the container does, even if the image is removed.
func TestImageVolume(t *testing.T) {
	e := newCtrEnv(t)
	data := imagetest.Image(t, v1.Config{}, imagetest.Layer(t,
		imagetest.Entry{Name: "data/", Type: tar.TypeDir},
		imagetest.Entry{Name: "data/hello.txt", Content: []byte("hello from the volume\n")},
		imagetest.Entry{Name: "escape", Type: tar.TypeSymlink, Linkname: "/etc"},
	))
	e.reg.Push(t, "volume:1", data)
	ref := e.reg.Ref("volume:1")
	imageID := pullImage(t, e.d, ref)
	podID, pod := e.pod(t, "imagevol")
	before := countLeaks(t, e.d)

	mount := func(path, sub string, readonly bool) *runtimeapi.Mount {
		return &runtimeapi.Mount{ContainerPath: path, Readonly: readonly, Image: &runtimeapi.ImageSpec{Image: imageID, UserSpecifiedImage: ref}, ImageSubPath: sub}
	}
	ctx := context.Background()
	for name, tc := range map[string]struct {
		m    *runtimeapi.Mount
		word string
	}{
		"writable":        {mount("/vol", "", false), "config.mounts[0].readonly"},
		"missing subpath": {mount("/vol", "no/such/dir", true), "config.mounts[0].image_sub_path"},
		// A symlink of the image resolves inside the image, never on the
		// host: the image has no /etc.
		"subpath through a symlink": {mount("/vol", "escape", true), "config.mounts[0].image_sub_path"},
		"with host path":            {&runtimeapi.Mount{ContainerPath: "/vol", HostPath: "/tmp", Readonly: true, Image: &runtimeapi.ImageSpec{Image: imageID}}, "config.mounts[0]"},
		"image not pulled":          {&runtimeapi.Mount{ContainerPath: "/vol", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "never/pulled:1"}}, "config.mounts[0].image"},
	} {
		cfg := ctrConfig("bad", e.image("plain"), "true")
		cfg.Mounts = []*runtimeapi.Mount{tc.m}
		_, err := e.d.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if err == nil || !strings.Contains(err.Error(), tc.word) || (name != "image not pulled" && status.Code(err) != codes.InvalidArgument) {
			t.Errorf("%s: %v, want an error naming %s", name, err, tc.word)
		}
	}
	if after := countLeaks(t, e.d); after != before {
		t.Errorf("failed creates left something behind:\nbefore %+v\nafter  %+v", before, after)
	}

	cfg := ctrConfig("reader", e.image("plain"), "sh", "-c",
		`cat /vol/data/hello.txt; cat /sub/hello.txt; touch /vol/x 2>/dev/null || echo read-only; sleep 300`)
	cfg.Mounts = []*runtimeapi.Mount{mount("/vol", "", true), mount("/sub", "data", true)}
	id := e.run(t, podID, pod, cfg)
	// Removing the image does not take the files from under the container.
	if _, err := e.d.images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: imageID}}); err != nil {
		t.Fatal(err)
	}
	var out string
	waitFor(t, func() bool {
		out = strings.Join(output(t, e.status(t, id).LogPath, "stdout"), "\n")
		return strings.Contains(out, "read-only")
	})
	if out != "hello from the volume\nhello from the volume\nread-only" {
		t.Errorf("the container saw %q", out)
	}
	st := e.status(t, id)
	if len(st.Mounts) != 2 || st.Mounts[0].GetImage().GetImageRef() != imageID || st.Mounts[1].GetImage().GetImageRef() != imageID {
		t.Errorf("ContainerStatus mounts %v, want image_ref %s on both", st.Mounts, imageID)
	}
	if _, err := e.d.runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if after := countLeaks(t, e.d); after != before {
		t.Errorf("the container left something behind:\nbefore %+v\nafter  %+v", before, after)
	}
}
