package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemoveImage removes the image named by a tag, a digest or its id, with
// all its tags (api.proto). It succeeds for an image that is not there:
// the CRI makes it idempotent and kubelet retries.
func (s *Server) RemoveImage(_ context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("image.image", "must name the image to remove")
	}
	if err := s.images.Remove(ref); err != nil {
		return nil, withField("image.image", err)
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}
