package cgroups

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/errdefs"
)

// Freeze stops every process of a cgroup tree where it is (the v1
// freezer's freezer.state, v2's cgroup.freeze) and returns once the kernel
// says they are stopped, or thaws them again and fails when ctx ends
// first. Written here rather than with containerd/cgroups' Freeze, which
// waits without end: a task that cannot be frozen would hang a checkpoint
// past its deadline. A pod's checkpoint freezes all its containers before
// it dumps any.
func (m *Manager) Freeze(ctx context.Context, path string) error {
	file, frozen, err := m.freezerFile(path, true)
	if err != nil {
		return err
	}
	if err := os.WriteFile(file, []byte(frozen), 0o644); err != nil {
		return fmt.Errorf("freezing cgroup %s: %w", path, err)
	}
	for {
		done, err := m.isFrozen(path)
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("freezing cgroup %s: %w", path, ctx.Err()), m.Thaw(path))
		case <-time.After(time.Millisecond):
		}
	}
}

// Thaw undoes Freeze.
func (m *Manager) Thaw(path string) error {
	file, thawed, err := m.freezerFile(path, false)
	if err != nil {
		return err
	}
	if err := os.WriteFile(file, []byte(thawed), 0o644); err != nil {
		return fmt.Errorf("thawing cgroup %s: %w", path, err)
	}
	return nil
}

// FreezerDir is the directory of the cgroup that freezes path's processes,
// which CRIU is told of (--freeze-cgroup); "" without a freezer.
func (m *Manager) FreezerDir(path string) string {
	if checkPath(path) != nil {
		return ""
	}
	if m.unified {
		return filepath.Join(m.mountpoint, path)
	}
	if root := m.v1Root(cgroup1.Freezer); root != "" {
		return filepath.Join(root, path)
	}
	return ""
}

// freezerFile is the file that freezes path and what to write in it.
func (m *Manager) freezerFile(path string, freeze bool) (file, value string, err error) {
	if err := checkPath(path); err != nil {
		return "", "", err
	}
	dir := m.FreezerDir(path)
	if dir == "" {
		return "", "", fmt.Errorf("no freezer hierarchy is mounted: %w", errdefs.ErrFailedPrecondition)
	}
	if _, err := os.Stat(dir); err != nil {
		return "", "", fmt.Errorf("cgroup %s: %w", path, errdefs.ErrNotFound)
	}
	switch {
	case m.unified && freeze:
		return filepath.Join(dir, "cgroup.freeze"), "1", nil
	case m.unified:
		return filepath.Join(dir, "cgroup.freeze"), "0", nil
	case freeze:
		return filepath.Join(dir, "freezer.state"), "FROZEN", nil
	default:
		return filepath.Join(dir, "freezer.state"), "THAWED", nil
	}
}

// isFrozen: v2's cgroup.events says "frozen 1" once every task is; v1's
// freezer.state goes from FREEZING to FROZEN.
func (m *Manager) isFrozen(path string) (bool, error) {
	dir := m.FreezerDir(path)
	r := &fileReader{}
	if m.unified {
		var frozen uint64
		r.keys(filepath.Join(dir, "cgroup.events"), keyed{"frozen", &frozen})
		return frozen == 1, r.err
	}
	return string(bytes.TrimSpace(r.read(filepath.Join(dir, "freezer.state")))) == "FROZEN", r.err
}
