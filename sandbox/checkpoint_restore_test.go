package sandbox

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

// TestCheckPlainTree: a checkpoint with a symlink anywhere, or without its
// images or writable layer, is refused.
func TestCheckPlainTree(t *testing.T) {
	dir := t.TempDir()
	if err := checkPlainTree(dir); !errdefs.IsInvalidArgument(err) {
		t.Errorf("empty checkpoint: %v", err)
	}
	_ = os.MkdirAll(filepath.Join(dir, "checkpoint"), 0o700)
	_ = os.WriteFile(filepath.Join(dir, "checkpoint", "pages-1.img"), []byte("x"), 0o600)
	_ = os.WriteFile(filepath.Join(dir, "rootfs-diff.tar"), nil, 0o600)
	if err := checkPlainTree(dir); err != nil {
		t.Errorf("plain checkpoint: %v", err)
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(dir, "checkpoint", "pages-2.img")); err != nil {
		t.Fatal(err)
	}
	if err := checkPlainTree(dir); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a symlink among the images: %v", err)
	}
}
