package cri

import (
	"context"
	"time"

	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/internal/metrics"
	"github.com/husk-runtime/husk/oci/image"
)

// PullImage pulls the image and returns its id: api.proto requires
// image_ref to equal Image.id and ContainerStatus.image_id.
func (s *Server) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("image.image", "must name the image to pull")
	}
	var auth *image.Auth
	if a := req.GetAuth(); a != nil {
		auth = &image.Auth{
			Username:      a.GetUsername(),
			Password:      a.GetPassword(),
			Auth:          a.GetAuth(),
			IdentityToken: a.GetIdentityToken(),
			RegistryToken: a.GetRegistryToken(),
		}
	}
	metrics.ImagePulls.Inc()
	start := time.Now()
	img, err := s.images.Pull(ctx, ref, auth)
	if err != nil {
		err = withField("image.image", err)
		// The reason is the code the client gets.
		metrics.ImagePullFailures.WithLabelValues(status.Code(toStatus(err)).String()).Inc()
		return nil, err
	}
	metrics.ImagePullDuration.Observe(time.Since(start).Seconds())
	return &runtimeapi.PullImageResponse{ImageRef: img.ID}, nil
}
