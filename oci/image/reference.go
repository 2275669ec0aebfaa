package image

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

var idPattern = regexp.MustCompile(`^(sha256:)?[a-f0-9]{64}$`)

// ParseReference turns what a user typed into the canonical name husk stores
// tags under, the same one containerd and CRI-O use: "busybox" is
// "docker.io/library/busybox:latest". A reference with both a tag and a digest
// keeps only the digest, which is what will be pulled.
func ParseReference(ref string) (reference.Named, error) {
	if ref == "" {
		return nil, fmt.Errorf("image reference is empty: %w", errdefs.ErrInvalidArgument)
	}
	if strings.Contains(ref, "://") {
		return nil, fmt.Errorf("image reference %q: transports are not supported, give a registry reference such as docker.io/library/busybox:latest: %w", ref, errdefs.ErrInvalidArgument)
	}
	if idPattern.MatchString(ref) {
		return nil, fmt.Errorf("image reference %q is an image id, not a name that can be pulled: %w", ref, errdefs.ErrInvalidArgument)
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	return named, nil
}

// normalizeID accepts "sha256:<hex>" or a bare 64-hex id.
func normalizeID(s string) (digest.Digest, bool) {
	if !idPattern.MatchString(s) {
		return "", false
	}
	if !strings.HasPrefix(s, "sha256:") {
		s = "sha256:" + s
	}
	return digest.Digest(s), true
}
