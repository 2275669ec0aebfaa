package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// statControllers are enabled for every cgroup when the hierarchy offers
// them, whether or not limits need them: without them a v2 cgroup has no
// memory.current, memory.stat, memory.events or pids.current, and Stats
// (kubelet's container stats, OOM detection) would read nothing. runc and
// crun enable every available controller for the same reason.
var statControllers = []string{"cpu", "memory", "pids", "io"}

func (m *Manager) loadV2(path string) (*cgroup2.Manager, error) {
	return cgroup2.Load(path, cgroup2.WithMountpoint(m.mountpoint))
}

// applyV2 makes the cgroup directory, enables controllers in its ancestors
// and writes res. Device rules are eBPF programs attached to the cgroup and
// can only be added, so they are applied on create only.
func (m *Manager) applyV2(path string, res *specs.LinuxResources, create bool) error {
	r, err := toV2(res)
	if err != nil {
		return err
	}
	dir := filepath.Join(m.mountpoint, path)
	offered, err := readFields(filepath.Join(m.mountpoint, "cgroup.controllers"))
	if err != nil {
		return err
	}
	if r.res.HugeTlb != nil {
		if slices.Contains(offered, "hugetlb") {
			r.need = append(r.need, "hugetlb")
		} else {
			// As on v1 without a hugetlb hierarchy: kubelet sends (zero)
			// hugepage limits whether or not the host can enforce them.
			r.res.HugeTlb = nil
		}
	}
	var need []string
	for _, c := range r.need {
		if slices.Contains(need, c) {
			continue
		}
		if !slices.Contains(offered, c) {
			return fmt.Errorf("%w: cgroup v2 controller %q is not available in %s", errdefs.ErrNotImplemented, c, m.mountpoint)
		}
		need = append(need, c)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := m.enableControllers(path, need, offered); err != nil {
		return err
	}
	if r.res.Memory != nil && r.res.Memory.Swap != nil {
		// memory.swap.max is missing when the kernel does not account
		// swap; as on v1, the swap limit is then dropped.
		if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); errors.Is(err, os.ErrNotExist) {
			r.res.Memory.Swap = nil
		}
	}
	if !create {
		r.res.Devices = nil
	}
	cg, err := m.loadV2(path)
	if err != nil {
		return err
	}
	if err := cg.Update(r.res); err != nil {
		return err
	}
	keys := make([]string, 0, len(r.unified))
	for k := range r.unified {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		f, err := os.OpenFile(filepath.Join(dir, k), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%w: unified key %q: no such file in cgroup %s", errdefs.ErrInvalidArgument, k, path)
			}
			return err
		}
		_, err = f.WriteString(r.unified[k])
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("unified key %q = %q: %w", k, r.unified[k], err)
		}
	}
	return nil
}

// enableControllers writes to cgroup.subtree_control of every ancestor of
// path, from the root down, the controllers that are not enabled there yet:
// need must be enabled, statControllers are enabled when offered. It writes
// one controller at a time so that a best-effort one that cannot be enabled
// (a parent with processes of its own refuses with EBUSY: v2 has no
// "internal" processes) does not stop the others. The cgroup's own
// subtree_control is left alone: a container's cgroup holds processes.
func (m *Manager) enableControllers(path string, need, offered []string) error {
	want := slices.Clone(need)
	for _, c := range statControllers {
		if slices.Contains(offered, c) && !slices.Contains(want, c) {
			want = append(want, c)
		}
	}
	if len(want) == 0 {
		return nil
	}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := range parts {
		dir := filepath.Join(append([]string{m.mountpoint}, parts[:i]...)...)
		enabled, err := readFields(filepath.Join(dir, "cgroup.subtree_control"))
		if err != nil {
			return err
		}
		for _, c := range want {
			if slices.Contains(enabled, c) {
				continue
			}
			err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0)
			if err != nil && slices.Contains(need, c) {
				if errors.Is(err, syscall.EBUSY) {
					return fmt.Errorf("enable controller %q in %s: %w (cgroup v2 lets no cgroup hold processes and give controllers to its children)", c, dir, err)
				}
				return fmt.Errorf("enable controller %q in %s: %w", c, dir, err)
			}
		}
	}
	return nil
}

func readFields(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

func (m *Manager) addProcessV2(path string, pid int) error {
	cg, err := m.loadV2(path)
	if err != nil {
		return err
	}
	return cg.AddProc(uint64(pid))
}

// gone: what reading a cgroup's files answers once it is removed, ENOENT
// for the files, ENODEV for one opened before.
func gone(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENODEV)
}

func (m *Manager) pidsV2(path string) ([]int, error) {
	return treePids(filepath.Join(m.mountpoint, path))
}
