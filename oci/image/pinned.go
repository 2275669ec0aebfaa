package image

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// pinPattern is one entry of the pinned_images setting: an image name
// (normalised as pulls are, so "pause:3.10" means
// "docker.io/library/pause:3.10"), an image id, or a prefix ending in "*"
// that is compared with the stored names as written.
type pinPattern struct {
	exact  string
	prefix string
}

func parsePinned(patterns []string) ([]pinPattern, error) {
	out := make([]pinPattern, 0, len(patterns))
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if prefix == "" || strings.Contains(prefix, "*") {
				return nil, fmt.Errorf("pinned image %q: a pattern is a name or a prefix followed by one trailing *: %w", p, errdefs.ErrInvalidArgument)
			}
			out = append(out, pinPattern{prefix: prefix})
			continue
		}
		if id, ok := normalizeID(p); ok {
			out = append(out, pinPattern{exact: id.String()})
			continue
		}
		named, err := ParseReference(p)
		if err != nil {
			return nil, fmt.Errorf("pinned image: %w", err)
		}
		out = append(out, pinPattern{exact: named.String()})
	}
	return out, nil
}

// ValidatePinned checks the pinned_images setting, for the config loader.
func ValidatePinned(patterns []string) error {
	_, err := parsePinned(patterns)
	return err
}

// Pinned says whether img is one of the configured pinned images, which
// kubelet's image garbage collection leaves alone (ImageStatus.pinned).
func (s *Store) Pinned(img Image) bool {
	for _, p := range s.config().pinned {
		for _, name := range append(append([]string{img.ID}, img.RepoTags...), img.RepoDigests...) {
			if name == p.exact || (p.prefix != "" && strings.HasPrefix(name, p.prefix)) {
				return true
			}
		}
	}
	return false
}
