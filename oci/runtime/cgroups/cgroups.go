// Package cgroups places pods and containers in cgroups and applies their
// resource limits, on cgroup v1 (legacy and hybrid hosts) and on cgroup v2
// (unified hosts), through github.com/containerd/cgroups/v3.
//
// A cgroup is named by its path inside the hierarchy ("/kubepods/pod1/abc"),
// the same form /proc/<pid>/cgroup shows; on v1 the same path exists in every
// mounted hierarchy. Both kubelet cgroup drivers are supported. With the
// systemd driver (cgroup v2 only) every pod is a transient slice and every
// container a transient scope with delegation, made through systemd's D-Bus
// API as runc does: systemd owns the tree it manages, and husk writes files
// only below the units it made (see systemd.go).
package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Driver is the kubelet cgroup driver: it decides the form of cgroup_parent
// and how children are named.
type Driver string

const (
	// Cgroupfs: parents are absolute cgroup paths, children are named by ID.
	Cgroupfs Driver = "cgroupfs"
	// Systemd: parents are slice unit names, children are "husk-<id>.scope".
	Systemd Driver = "systemd"
)

// DefaultUnifiedMountpoint is where a unified (v2 only) host mounts cgroup2.
const DefaultUnifiedMountpoint = "/sys/fs/cgroup"

const (
	// defaultCgroupfsParent and defaultSystemdParent hold pods whose
	// sandbox config names no cgroup_parent (crictl, tests).
	defaultCgroupfsParent = "/husk"
	defaultSystemdParent  = "husk.slice"
)

// Option configures New.
type Option func(*config)

type config struct {
	mountpoint string
	mode       cgroups.CGMode
}

// WithUnifiedMountpoint sets where the cgroup2 hierarchy is mounted (default
// /sys/fs/cgroup). With WithMode(cgroups.Unified) it lets the v2 code run
// against the cgroup2 hierarchy of a hybrid host (/sys/fs/cgroup/unified).
func WithUnifiedMountpoint(path string) Option {
	return func(c *config) { c.mountpoint = path }
}

// WithMode forces the code path instead of detecting it: cgroups.Unified
// selects v2, cgroups.Legacy or cgroups.Hybrid select v1.
func WithMode(mode cgroups.CGMode) Option {
	return func(c *config) { c.mode = mode }
}

// Manager creates, limits, fills, reads and deletes cgroups. It holds no
// per-cgroup state (everything is read from the filesystem), so one Manager
// serves the whole daemon, is safe for concurrent use and survives restarts.
type Manager struct {
	driver  Driver
	unified bool

	// v2: the cgroup2 mountpoint.
	mountpoint string

	// v1: the subsystems found at New, handed to the cgroup1 package so
	// that it does not re-read /proc/self/mountinfo on every call, and the
	// distinct hierarchy roots (co-mounted controllers share one).
	v1Subsystems []cgroup1.Subsystem
	v1Roots      []v1Root

	// The systemd driver's connection to systemd.
	sd *systemd
}

type v1Root struct {
	name cgroup1.Name // first subsystem found mounted there
	dir  string
}

type pather interface{ Path(string) string }

// New detects whether the host runs cgroup v1 (legacy or hybrid: v1 code) or
// v2 only (unified: v2 code), unless an Option forces it. An empty driver
// means Cgroupfs.
func New(driver Driver, opts ...Option) (*Manager, error) {
	switch driver {
	case "":
		driver = Cgroupfs
	case Cgroupfs, Systemd:
	default:
		return nil, fmt.Errorf("%w: cgroup driver %q: want %q or %q", errdefs.ErrInvalidArgument, driver, Cgroupfs, Systemd)
	}
	c := config{mountpoint: DefaultUnifiedMountpoint, mode: -1}
	for _, o := range opts {
		o(&c)
	}
	if c.mode == -1 {
		c.mode = cgroups.Mode()
	}
	m := &Manager{driver: driver, mountpoint: filepath.Clean(c.mountpoint)}
	switch c.mode {
	case cgroups.Unified:
		var st unix.Statfs_t
		if err := unix.Statfs(m.mountpoint, &st); err != nil {
			return nil, fmt.Errorf("cgroup2 mountpoint: %w", err)
		}
		if st.Type != unix.CGROUP2_SUPER_MAGIC {
			return nil, fmt.Errorf("%w: %s is not a cgroup2 mount", errdefs.ErrUnavailable, m.mountpoint)
		}
		m.unified = true
	case cgroups.Legacy, cgroups.Hybrid:
		subs, err := cgroup1.Default()
		if err != nil {
			return nil, fmt.Errorf("cgroup v1 hierarchies: %w", err)
		}
		seen := map[string]bool{}
		for _, s := range subs {
			p, ok := s.(pather)
			if !ok {
				continue
			}
			dir := p.Path("/")
			real, err := filepath.EvalSymlinks(dir)
			if err != nil {
				real = dir
			}
			if seen[real] {
				continue
			}
			seen[real] = true
			m.v1Roots = append(m.v1Roots, v1Root{name: s.Name(), dir: dir})
		}
		// Every subsystem is kept (co-mounted ones write different files in
		// the same directory); the roots only once.
		m.v1Subsystems = subs
		if len(m.v1Roots) == 0 {
			return nil, fmt.Errorf("%w: no cgroup v1 hierarchy is mounted", errdefs.ErrUnavailable)
		}
	default:
		return nil, fmt.Errorf("%w: no cgroup filesystem is mounted", errdefs.ErrUnavailable)
	}
	if driver == Systemd {
		// Kubernetes runs the systemd driver on cgroup v2 alone (kubelet
		// refuses v1 by default since 1.35).
		if !m.unified {
			return nil, fmt.Errorf("%w: the systemd cgroup driver needs a host on cgroup v2 alone (this one runs v1); use cgroupfs", errdefs.ErrUnavailable)
		}
		sd, err := connectSystemd()
		if err != nil {
			return nil, err
		}
		m.sd = sd
	}
	return m, nil
}

// Close lets go of the connection to systemd, if any.
func (m *Manager) Close() {
	if m.sd != nil {
		m.sd.conn.Close()
	}
}

// Check refuses what Create would refuse of res before the kernel sees it
// (a memory+swap limit below the memory limit, for one); the kernel's own
// refusals come only from Create.
func (m *Manager) Check(res *specs.LinuxResources) error {
	if !m.unified {
		return nil
	}
	_, err := toV2(res)
	return err
}

// CreatedAtStart reports whether a container's cgroup is made when it
// starts, with its first process (Create with a pid), rather than when it
// is created: a systemd scope cannot exist without a process.
func (m *Manager) CreatedAtStart() bool { return m.sd != nil }

// Driver returns the cgroup driver the Manager was made for.
func (m *Manager) Driver() Driver { return m.driver }

// Unified reports whether the Manager runs the cgroup v2 code.
func (m *Manager) Unified() bool { return m.unified }

// HasHugetlb reports whether hugepage limits can be set: the hugetlb
// controller is mounted (v1) or offered at the root (v2).
func (m *Manager) HasHugetlb() bool {
	if !m.unified {
		return m.v1Root(cgroup1.Hugetlb) != ""
	}
	b, err := os.ReadFile(filepath.Join(m.mountpoint, "cgroup.controllers"))
	return err == nil && slices.Contains(strings.Fields(string(b)), "hugetlb")
}

// checkPath refuses cgroup paths that are not absolute and clean, or that
// name the root: every operation below could otherwise reach outside the
// cgroups husk owns (Delete of "/" must never walk the whole hierarchy).
func checkPath(path string) error {
	if !strings.HasPrefix(path, "/") || filepath.Clean(path) != path || path == "/" {
		return fmt.Errorf("%w: cgroup path %q: want an absolute, clean path below the root", errdefs.ErrInvalidArgument, path)
	}
	return nil
}

// dirs returns the directory of path in every hierarchy (one on v2).
func (m *Manager) dirs(path string) []string {
	if m.unified {
		return []string{filepath.Join(m.mountpoint, path)}
	}
	out := make([]string, 0, len(m.v1Roots))
	for _, r := range m.v1Roots {
		out = append(out, filepath.Join(r.dir, path))
	}
	return out
}

// roots returns the root directory of every hierarchy (one on v2).
func (m *Manager) roots() []string {
	if m.unified {
		return []string{m.mountpoint}
	}
	out := make([]string, 0, len(m.v1Roots))
	for _, r := range m.v1Roots {
		out = append(out, r.dir)
	}
	return out
}

// missingTops returns, per hierarchy, the topmost directory of path that does
// not exist yet: what Create makes and so what it removes if it fails.
func (m *Manager) missingTops(path string) []string {
	var tops []string
	for _, root := range m.roots() {
		top := ""
		for p := path; p != "/"; p = filepath.Dir(p) {
			if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
				break
			}
			top = p
		}
		if top != "" {
			tops = append(tops, filepath.Join(root, top))
		}
	}
	return tops
}

// Create makes the cgroup (in every v1 hierarchy; on v2 enabling in its
// ancestors the controllers the resources need, plus cpu, memory, io and pids
// when offered so that Stats has numbers), moves pids into it and applies
// res, which may be nil. Creating an existing cgroup applies res again. On
// failure everything Create made is removed; a cgroup that existed before is
// left as it was.
//
// With the systemd driver a path ending in ".slice" is made as a transient
// slice and one ending in ".scope" as a transient scope in the slice above
// it, delegated to husk; a scope starts with its processes, so pids must
// name at least one, and they are in it before res is applied (the caller
// holds them until Create returns). Other paths are plain directories, made
// only inside a delegated scope.
func (m *Manager) Create(path string, res *specs.LinuxResources, pids ...int) (err error) {
	if err := checkPath(path); err != nil {
		return err
	}
	for _, pid := range pids {
		if pid <= 0 {
			return fmt.Errorf("%w: pid %d", errdefs.ErrInvalidArgument, pid)
		}
	}
	if m.sd != nil {
		if err := m.createSystemd(path, res, pids); err != nil {
			return fmt.Errorf("create cgroup %s: %w", path, refusal(err))
		}
		return nil
	}
	created := m.missingTops(path)
	defer func() {
		if err == nil {
			return
		}
		for _, dir := range created {
			if rerr := removeTree(dir); rerr != nil {
				err = errors.Join(err, fmt.Errorf("undo create: %w", rerr))
			}
		}
	}()
	if m.unified {
		err = m.applyV2(path, res, true)
	} else {
		err = m.applyV1(path, res)
	}
	if err != nil {
		return fmt.Errorf("create cgroup %s: %w", path, refusal(err))
	}
	for _, pid := range pids {
		if err := m.AddProcess(path, pid); err != nil {
			return err
		}
	}
	return nil
}

// refusal classifies what the kernel answered a write of a limit: a value it
// does not take is the request's fault (EINVAL, ERANGE, or EOPNOTSUPP for a
// file the kernel does not have), and EBUSY is the cgroup's state (a memory
// limit below what it uses now).
func refusal(err error) error {
	switch {
	case errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ERANGE), errors.Is(err, syscall.EOPNOTSUPP):
		return fmt.Errorf("the kernel refused a value: %w: %w", err, errdefs.ErrInvalidArgument)
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("the kernel refused the limit for what the cgroup uses now: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	return err
}

// Update applies res to an existing cgroup (errdefs.ErrNotFound if it does
// not exist). Fields left nil are not changed. On v2 device rules are not
// changed by Update: they are eBPF programs that can only be added, and CRI
// updates never carry any.
func (m *Manager) Update(path string, res *specs.LinuxResources) error {
	if err := checkPath(path); err != nil {
		return err
	}
	if !m.Exists(path) {
		return fmt.Errorf("%w: cgroup %s", errdefs.ErrNotFound, path)
	}
	if res == nil {
		return nil
	}
	var err error
	if unit := unitOf(path); m.sd != nil && unit != "" {
		var r *v2Resources
		if r, err = toV2(res); err == nil {
			err = m.sd.setProperties(unit, unitProperties(r))
		}
	}
	if err == nil && m.unified {
		err = m.applyV2(path, res, false)
	} else if err == nil {
		err = m.applyV1(path, res)
	}
	if err != nil {
		return fmt.Errorf("update cgroup %s: %w", path, refusal(err))
	}
	return nil
}

// AddProcess moves the process (all its threads) into the cgroup, in every
// hierarchy on v1.
func (m *Manager) AddProcess(path string, pid int) error {
	if err := checkPath(path); err != nil {
		return err
	}
	if pid <= 0 {
		return fmt.Errorf("%w: pid %d", errdefs.ErrInvalidArgument, pid)
	}
	if !m.Exists(path) {
		return fmt.Errorf("%w: cgroup %s", errdefs.ErrNotFound, path)
	}
	var err error
	if m.unified {
		err = m.addProcessV2(path, pid)
	} else {
		err = m.addProcessV1(path, pid)
	}
	if err != nil {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, path, err)
	}
	return nil
}

// Pids lists the processes in the cgroup and its descendants (on v1 in any
// hierarchy), sorted. A missing cgroup is errdefs.ErrNotFound.
func (m *Manager) Pids(path string) ([]int, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	if !m.Exists(path) {
		return nil, fmt.Errorf("%w: cgroup %s", errdefs.ErrNotFound, path)
	}
	walk := m.pidsV1
	if m.unified {
		walk = m.pidsV2
	}
	pids, err := walk(path)
	// On v1 the cgroup may vanish from one hierarchy before the others
	// while another Delete removes it: walk again while any is left.
	for try := 0; gone(err) && try < 10; try++ {
		if !m.Exists(path) {
			return nil, fmt.Errorf("%w: cgroup %s", errdefs.ErrNotFound, path)
		}
		pids, err = walk(path)
	}
	if err != nil {
		return nil, fmt.Errorf("list processes of cgroup %s: %w", path, err)
	}
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

// Members lists the processes in the cgroup and its descendants as its
// stats count them: on v1 in one hierarchy (pids', else cpu's), where
// every process of a container is, rather than in each of the ten as Pids
// does to kill all. A missing cgroup (or hierarchy) has none. The metrics
// read it for every container; the walk of all hierarchies was a third of
// ListPodSandboxMetrics.
func (m *Manager) Members(path string) ([]int, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	var dir string
	if m.unified {
		dir = filepath.Join(m.mountpoint, path)
	} else if root := m.v1Root(cgroup1.Pids); root != "" {
		dir = filepath.Join(root, path)
	} else if root := m.v1Root(cgroup1.Cpu); root != "" {
		dir = filepath.Join(root, path)
	} else {
		pids, err := m.Pids(path)
		if errdefs.IsNotFound(err) {
			return nil, nil
		}
		return pids, err
	}
	pids, err := treePids(dir)
	if gone(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list processes of cgroup %s: %w", path, err)
	}
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

// treePids lists the processes of the cgroup at dir and of every cgroup
// below it. The cgroup libraries' walks fail as a whole when a child is
// removed during the walk (ENOENT, or ENODEV for a cgroup.procs opened
// before), as happens when a container's cgroup is deleted while its pod's
// is listed or systemd removes a scope whose processes ended. A removed
// cgroup had no processes (rmdir refuses one that has), so a child that
// vanishes is skipped; dir itself vanishing is an error gone() knows.
func treePids(dir string) ([]int, error) {
	var pids []int
	var walk func(d string, top bool) error
	walk = func(d string, top bool) error {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		var entries []os.DirEntry
		if err == nil {
			entries, err = os.ReadDir(d)
		}
		if err != nil {
			if !top && gone(err) {
				return nil
			}
			return fmt.Errorf("list processes of %s: %w", d, err)
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, perr := strconv.Atoi(f); perr == nil {
				pids = append(pids, pid)
			}
		}
		for _, e := range entries {
			if e.IsDir() {
				if err := walk(filepath.Join(d, e.Name()), false); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return pids, walk(dir, true)
}

// Delete removes the cgroup and its descendants from every hierarchy. It
// kills nothing: if any process is left in the tree it returns an error
// wrapping errdefs.ErrFailedPrecondition and removes nothing. A cgroup that
// does not exist is deleted already.
func (m *Manager) Delete(path string) error {
	if err := checkPath(path); err != nil {
		return err
	}
	if !m.Exists(path) {
		return nil
	}
	pids, err := m.Pids(path)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return err
	}
	if len(pids) > 0 {
		return fmt.Errorf("%w: delete cgroup %s: %d processes still in it (%v)", errdefs.ErrFailedPrecondition, path, len(pids), pids)
	}
	if unit := unitOf(path); m.sd != nil && unit != "" {
		// systemd removes the cgroups of the units it stops; what is left
		// (directories made inside a delegated scope) goes below.
		if err := m.sd.stop(unit); err != nil {
			return fmt.Errorf("delete cgroup %s: %w", path, err)
		}
	}
	var errs []error
	for _, dir := range m.dirs(path) {
		if err := removeTree(dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete cgroup %s: %w", path, err)
	}
	return nil
}

// Exists reports whether the cgroup exists (on v1: in any hierarchy).
func (m *Manager) Exists(path string) bool {
	if checkPath(path) != nil {
		return false
	}
	for _, dir := range m.dirs(path) {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return true
		}
	}
	return false
}

// removeTree removes a cgroup directory and every cgroup below it, deepest
// first. Only directories are removed (rmdir): cgroupfs refuses to remove a
// cgroup that has processes, so nothing running is touched. rmdir can return
// EBUSY for a moment after the last process left; that is retried.
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	delay := 10 * time.Millisecond
	for i := 0; ; i++ {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || i == 5 {
			return &os.PathError{Op: "rmdir", Path: dir, Err: err}
		}
		time.Sleep(delay)
		delay *= 2
	}
}

// ProcsFiles are the cgroup.procs files of path, one per hierarchy: writing
// a pid to each moves that process into the cgroup. The container monitor
// does it for the container's first process while the runtime sets the
// container up (on cgroup v1 each move waits for an RCU grace period, a few
// milliseconds a hierarchy).
func (m *Manager) ProcsFiles(path string) []string {
	if checkPath(path) != nil {
		return nil
	}
	dirs := m.dirs(path)
	out := make([]string, 0, len(dirs))
	for _, d := range dirs {
		out = append(out, filepath.Join(d, "cgroup.procs"))
	}
	return out
}
