package cri

import (
	"context"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/oci/image"
)

// ListImages lists every image, or the one the filter names (by id, tag or
// digest, as ImageStatus resolves it).
func (s *Server) ListImages(_ context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	imgs, err := s.listImages(req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListImagesResponse{Images: imgs}, nil
}

// StreamImages is ListImages sent in chunks (see stream_list.go).
func (s *Server) StreamImages(req *runtimeapi.StreamImagesRequest, stream runtimeapi.ImageService_StreamImagesServer) error {
	imgs, err := s.listImages(req.GetFilter())
	if err != nil {
		return err
	}
	return sendChunks(imgs, func(items []*runtimeapi.Image) error {
		return stream.Send(&runtimeapi.StreamImagesResponse{Images: items})
	})
}

func (s *Server) listImages(filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	if ref := filter.GetImage().GetImage(); ref != "" {
		img, err := s.images.Get(ref)
		if errdefs.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, withField("filter.image.image", err)
		}
		return []*runtimeapi.Image{toCRIImage(img, s.images.Pinned(img))}, nil
	}
	all := s.images.List()
	out := make([]*runtimeapi.Image, 0, len(all))
	for _, img := range all {
		out = append(out, toCRIImage(img, s.images.Pinned(img)))
	}
	return out, nil
}

func toCRIImage(img image.Image, pinned bool) *runtimeapi.Image {
	out := &runtimeapi.Image{
		Id:          img.ID,
		RepoTags:    img.RepoTags,
		RepoDigests: img.RepoDigests,
		Size:        img.Size,
		Spec:        &runtimeapi.ImageSpec{Image: img.ID},
		Pinned:      pinned,
	}
	// USER is "user", "uid", "user:group" or "uid:gid"; the CRI wants either
	// a uid or a name, and the group is resolved when a container is made.
	user, _, _ := strings.Cut(img.User, ":")
	if uid, err := strconv.ParseInt(user, 10, 64); err == nil {
		out.Uid = &runtimeapi.Int64Value{Value: uid}
	} else {
		out.Username = user
	}
	return out
}
