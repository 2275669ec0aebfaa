package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func (m *Manager) v1Opts() []cgroup1.InitOpts {
	return []cgroup1.InitOpts{cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) {
		return m.v1Subsystems, nil
	})}
}

// v1Root returns the root of the hierarchy that holds a controller, "" when
// it is not mounted.
func (m *Manager) v1Root(name cgroup1.Name) string {
	for _, s := range m.v1Subsystems {
		if s.Name() == name {
			if p, ok := s.(pather); ok {
				return p.Path("/")
			}
		}
	}
	return ""
}

// applyV1 makes path in every hierarchy (cgroup1.New is MkdirAll, so it is
// also how a cgroup missing from some hierarchy is completed) and writes res.
func (m *Manager) applyV1(path string, res *specs.LinuxResources) error {
	if res != nil && len(res.Unified) > 0 {
		return fmt.Errorf("%w: unified resources (%d keys) need cgroup v2", errdefs.ErrInvalidArgument, len(res.Unified))
	}
	res, err := m.v1Resources(res)
	if err != nil {
		return err
	}
	// The hugetlb controller of cgroup1 writes its limits only when
	// creating, and its memory controller orders memory and memory+swap
	// limits right only when updating: create with the hugepage limits,
	// then update with the rest.
	create := &specs.LinuxResources{}
	if res != nil {
		create.HugepageLimits = res.HugepageLimits
	}
	cg, err := cgroup1.New(cgroup1.StaticPath(path), create, m.v1Opts()...)
	if err != nil {
		return err
	}
	if res == nil {
		return nil
	}
	if mem := res.Memory; mem != nil && mem.Swap != nil {
		// The kernel keeps memory+swap >= memory at every write. cgroup1
		// writes memory first, and its reordering for raised limits swaps
		// the wrong entries (v3.1.3): when the new memory+swap limit is at
		// least the current memory limit, write it first here.
		dir := filepath.Join(m.v1Root(cgroup1.Memory), path)
		b, err := os.ReadFile(filepath.Join(dir, "memory.limit_in_bytes"))
		if err != nil {
			return err
		}
		cur, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return fmt.Errorf("memory.limit_in_bytes: %w", err)
		}
		if *mem.Swap == -1 || *mem.Swap >= cur {
			if err := os.WriteFile(filepath.Join(dir, "memory.memsw.limit_in_bytes"), []byte(strconv.FormatInt(*mem.Swap, 10)), 0); err != nil {
				return err
			}
		}
	}
	return cg.Update(res)
}

// v1Resources checks res against the mounted hierarchies: limits for a
// controller that is not mounted are an error, not silently dropped, except
// hugepage limits (kubelet sends a zero limit for every page size) and the
// memory+swap limit when swap accounting is off (as containerd does). res
// is not modified; a copy is returned when something is dropped.
func (m *Manager) v1Resources(res *specs.LinuxResources) (*specs.LinuxResources, error) {
	if res == nil {
		return nil, nil
	}
	missing := func(name cgroup1.Name) error {
		return fmt.Errorf("%w: cgroup v1 controller %q is not mounted", errdefs.ErrNotImplemented, name)
	}
	if c := res.CPU; c != nil {
		if (c.Shares != nil || c.Quota != nil || c.Period != nil || c.RealtimePeriod != nil || c.RealtimeRuntime != nil) && m.v1Root(cgroup1.Cpu) == "" {
			return nil, missing(cgroup1.Cpu)
		}
		if (c.Cpus != "" || c.Mems != "") && m.v1Root(cgroup1.Cpuset) == "" {
			return nil, missing(cgroup1.Cpuset)
		}
	}
	if res.Pids != nil && m.v1Root(cgroup1.Pids) == "" {
		return nil, missing(cgroup1.Pids)
	}
	if res.BlockIO != nil && m.v1Root(cgroup1.Blkio) == "" {
		return nil, missing(cgroup1.Blkio)
	}
	if mem := res.Memory; mem != nil {
		root := m.v1Root(cgroup1.Memory)
		if root == "" {
			return nil, missing(cgroup1.Memory)
		}
		// Zero limits mean "not set" (as on v2), not "no memory".
		mm := *mem
		if mm.Limit != nil && *mm.Limit == 0 {
			mm.Limit = nil
		}
		if mm.Swap != nil {
			if _, err := os.Stat(filepath.Join(root, "memory.memsw.limit_in_bytes")); *mm.Swap == 0 || errors.Is(err, os.ErrNotExist) {
				mm.Swap = nil
			}
		}
		r := *res
		r.Memory = &mm
		res = &r
	}
	return res, nil
}

func (m *Manager) loadV1(path string) (cgroup1.Cgroup, error) {
	cg, err := cgroup1.Load(cgroup1.StaticPath(path), m.v1Opts()...)
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return nil, fmt.Errorf("%w: cgroup %s", errdefs.ErrNotFound, path)
	}
	return cg, err
}

func (m *Manager) addProcessV1(path string, pid int) error {
	cg, err := m.loadV1(path)
	if err != nil {
		return err
	}
	return cg.AddProc(uint64(pid))
}

// pidsV1 lists the processes of the cgroup tree in every hierarchy: a
// process can sit in different cgroups in different hierarchies, and Delete
// must not miss one.
func (m *Manager) pidsV1(path string) ([]int, error) {
	cg, err := m.loadV1(path)
	if err != nil {
		return nil, err
	}
	var pids []int
	seen := map[string]bool{}
	for _, s := range cg.Subsystems() {
		p, ok := s.(pather)
		if !ok || seen[p.Path(path)] {
			continue
		}
		seen[p.Path(path)] = true
		if _, err := os.Stat(p.Path(path)); errors.Is(err, os.ErrNotExist) {
			continue // not made in this hierarchy
		}
		procs, err := treePids(p.Path(path))
		if err != nil {
			return nil, err
		}
		pids = append(pids, procs...)
	}
	return pids, nil
}
