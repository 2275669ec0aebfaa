package cgroups

import (
	"fmt"
	"path/filepath"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/errdefs"
)

// Freeze stops every process of a cgroup tree where it is (the v1 freezer,
// v2's cgroup.freeze) and returns once they are stopped; Thaw lets them go
// on. A pod's checkpoint freezes all its containers before it dumps any.
func (m *Manager) Freeze(path string) error {
	if err := checkPath(path); err != nil {
		return err
	}
	if m.unified {
		cg, err := m.loadV2(path)
		if err != nil {
			return err
		}
		return cg.Freeze()
	}
	cg, err := m.freezerV1(path)
	if err != nil {
		return err
	}
	return cg.Freeze()
}

// Thaw undoes Freeze.
func (m *Manager) Thaw(path string) error {
	if err := checkPath(path); err != nil {
		return err
	}
	if m.unified {
		cg, err := m.loadV2(path)
		if err != nil {
			return err
		}
		return cg.Thaw()
	}
	cg, err := m.freezerV1(path)
	if err != nil {
		return err
	}
	return cg.Thaw()
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

func (m *Manager) freezerV1(path string) (cgroup1.Cgroup, error) {
	root := m.v1Root(cgroup1.Freezer)
	if root == "" {
		return nil, fmt.Errorf("no freezer hierarchy is mounted: %w", errdefs.ErrFailedPrecondition)
	}
	freezer := cgroup1.NewFreezer(filepath.Dir(root))
	return cgroup1.Load(cgroup1.StaticPath(path), cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) {
		return []cgroup1.Subsystem{freezer}, nil
	}))
}
