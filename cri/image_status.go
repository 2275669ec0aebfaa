package cri

import (
	"context"
	"encoding/json"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// verboseImageInfo is the "info" of a verbose ImageStatus.
type verboseImageInfo struct {
	ImageSpec ocispec.Image `json:"imageSpec"`
	Layers    []string      `json:"layers"`
}

// ImageStatus returns a nil image, not an error, for an image that is not
// there: kubelet asks before every pull.
func (s *Server) ImageStatus(_ context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("image.image", "must name an image")
	}
	img, err := s.images.Get(ref)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, withField("image.image", err)
	}
	resp := &runtimeapi.ImageStatusResponse{Image: toCRIImage(img, s.images.Pinned(img))}
	if req.GetVerbose() {
		cfg, _, err := s.images.Config(img.ID)
		if errdefs.IsNotFound(err) {
			return &runtimeapi.ImageStatusResponse{}, nil // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		info := verboseImageInfo{ImageSpec: cfg}
		for _, l := range img.Layers {
			info.Layers = append(info.Layers, l.String())
		}
		b, err := json.Marshal(info)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}
