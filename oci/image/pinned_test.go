package image

import (
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

func TestPinnedImagesByNameIDAndPrefix(t *testing.T) {
	img := Image{
		ID:          "sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
		RepoTags:    []string{"registry.k8s.io/pause:3.10", "docker.io/library/busybox:latest"},
		RepoDigests: []string{"registry.k8s.io/pause@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
	}
	for _, tc := range []struct {
		patterns []string
		want     bool
	}{
		{nil, false},
		{[]string{"registry.k8s.io/pause:3.10"}, true},
		{[]string{"busybox"}, true}, // normalised as a pull is
		{[]string{"registry.k8s.io/pause:3.9"}, false},
		{[]string{"registry.k8s.io/pause:*"}, true},
		{[]string{"registry.k8s.io/pause@*"}, true},
		{[]string{"registry.k8s.io/coredns*"}, false},
		{[]string{img.ID}, true},
		{[]string{img.ID[len("sha256:"):]}, true},
		{[]string{"quay.io/x:1", "docker.io/library/*"}, true},
	} {
		s, err := Open(filepath.Join(t.TempDir(), "images"), Options{Pinned: tc.patterns})
		if err != nil {
			t.Fatalf("%q: %v", tc.patterns, err)
		}
		if got := s.Pinned(img); got != tc.want {
			t.Errorf("pinned with %q: %v, want %v", tc.patterns, got, tc.want)
		}
		_ = s.Close()
	}
}

func TestBadPinnedPatternsAreRefused(t *testing.T) {
	for _, p := range []string{"", "*", "a*b*", "library/BusyBox:1", "http://x/y:1"} {
		err := ValidatePinned([]string{p})
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("pattern %q: %v, want an invalid-argument error", p, err)
		}
		if _, err := Open(filepath.Join(t.TempDir(), "images"), Options{Pinned: []string{p}}); err == nil {
			t.Errorf("Open accepted pinned pattern %q", p)
		}
	}
}
