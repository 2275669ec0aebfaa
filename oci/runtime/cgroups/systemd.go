package cgroups

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	sdbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// systemdJobTimeout bounds one unit job (start or stop). systemd answers in
// milliseconds; an emulated guest or a busy node can take seconds.
const systemdJobTimeout = 90 * time.Second

// systemd is the driver's link to systemd's manager (PID 1), over its
// private socket as runc does for root: no D-Bus daemon is needed. It is
// dialed again when systemd re-executes itself (systemctl daemon-reexec
// closes every connection).
type systemd struct {
	mu   sync.Mutex
	conn *sdbus.Conn
	// oomPolicy: systemd 253 and later take OOMPolicy= for scopes, and
	// default it to stopping the whole scope on any OOM kill.
	oomPolicy bool
}

func connectSystemd() (*systemd, error) {
	s := &systemd{}
	conn, err := s.dial()
	if err != nil {
		return nil, err
	}
	v, err := conn.GetManagerProperty("Version")
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: asking systemd for its version: %w", errdefs.ErrUnavailable, err)
	}
	s.conn, s.oomPolicy = conn, systemdVersion(v) >= 253
	return s, nil
}

func (s *systemd) dial() (*sdbus.Conn, error) {
	// The context lives as long as the connection: godbus closes the
	// connection when it ends.
	conn, err := sdbus.NewSystemdConnectionContext(context.Background())
	if err != nil {
		return nil, fmt.Errorf("%w: the systemd cgroup driver needs systemd as PID 1, reachable at /run/systemd/private: %w", errdefs.ErrUnavailable, err)
	}
	return conn, nil
}

// systemdVersion reads the number systemd's Version property starts with
// (`"252.30-1~deb12u2"`, `"v255"`); 0 if there is none.
func systemdVersion(v string) int {
	v = strings.TrimPrefix(strings.Trim(v, `"`), "v")
	end := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		v = v[:end]
	}
	n, _ := strconv.Atoi(v)
	return n
}

// do runs fn on the connection, dialing again once if systemd closed it.
func (s *systemd) do(fn func(*sdbus.Conn) error) error {
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	err := fn(conn)
	// Only a call that failed for a closed connection is made again: one
	// that got through must not run twice.
	if err == nil || (!errors.Is(err, godbus.ErrClosed) && conn.Connected()) {
		return err
	}
	s.mu.Lock()
	if s.conn == conn {
		fresh, derr := s.dial()
		if derr != nil {
			s.mu.Unlock()
			return errors.Join(err, derr)
		}
		conn.Close()
		s.conn = fresh
	}
	conn = s.conn
	s.mu.Unlock()
	return fn(conn)
}

// dbusErrorName is the D-Bus error name systemd answered with, if any.
func dbusErrorName(err error) string {
	var de godbus.Error
	if errors.As(err, &de) {
		return de.Name
	}
	var dp *godbus.Error
	if errors.As(err, &dp) {
		return dp.Name
	}
	return ""
}

// waitJob waits for a job's result: systemd's "done", or an error naming
// what it answered instead ("failed", "timeout", "dependency", ...).
func waitJob(ctx context.Context, what string, ch <-chan string) error {
	select {
	case r := <-ch:
		if r != "done" {
			return fmt.Errorf("systemd %s: job %s", what, r)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("systemd %s: no answer in %v", what, systemdJobTimeout)
	}
}

// start starts a transient unit and waits until it is active. A unit of
// that name that is active already is left as it is, with its properties
// set to props (exists reports it); a failed one is reset and made again.
func (s *systemd) start(unit string, props []sdbus.Property) (exists bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), systemdJobTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		ch := make(chan string, 1)
		err = s.do(func(c *sdbus.Conn) error {
			_, err := c.StartTransientUnitContext(ctx, unit, "replace", props, ch)
			return err
		})
		if err == nil {
			return false, waitJob(ctx, "starting "+unit, ch)
		}
		if dbusErrorName(err) != "org.freedesktop.systemd1.UnitExists" || attempt > 0 {
			return false, fmt.Errorf("systemd: starting %s: %w", unit, err)
		}
		state, perr := s.activeState(ctx, unit)
		if perr == nil && (state == "active" || state == "activating" || state == "reloading") {
			return true, s.setProperties(unit, props)
		}
		// Failed, or inactive and not collected yet: made anew.
		_ = s.do(func(c *sdbus.Conn) error { return c.ResetFailedUnitContext(ctx, unit) })
	}
}

func (s *systemd) activeState(ctx context.Context, unit string) (string, error) {
	var p *sdbus.Property
	err := s.do(func(c *sdbus.Conn) error {
		var err error
		p, err = c.GetUnitPropertyContext(ctx, unit, "ActiveState")
		return err
	})
	if err != nil {
		return "", err
	}
	st, _ := p.Value.Value().(string)
	return st, nil
}

// setProperties changes a running unit's properties (for this boot only:
// transient units have no file to keep them in). Properties a unit is
// created with but cannot change (Slice, Delegate, PIDs) are left out.
func (s *systemd) setProperties(unit string, props []sdbus.Property) error {
	var change []sdbus.Property
	for _, p := range props {
		switch p.Name {
		case "Slice", "Delegate", "PIDs", "Description", "DefaultDependencies", "CollectMode", "OOMPolicy":
			continue
		}
		change = append(change, p)
	}
	if len(change) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), systemdJobTimeout)
	defer cancel()
	if err := s.do(func(c *sdbus.Conn) error { return c.SetUnitPropertiesContext(ctx, unit, true, change...) }); err != nil {
		return fmt.Errorf("systemd: setting properties of %s: %w", unit, err)
	}
	return nil
}

// stop stops a unit and waits until it is gone; a unit systemd does not
// know (any more) is stopped already. Stopping a slice stops the units in
// it; systemd removes their cgroups.
func (s *systemd) stop(unit string) error {
	ctx, cancel := context.WithTimeout(context.Background(), systemdJobTimeout)
	defer cancel()
	ch := make(chan string, 1)
	err := s.do(func(c *sdbus.Conn) error {
		_, err := c.StopUnitContext(ctx, unit, "replace", ch)
		return err
	})
	if err != nil {
		if dbusErrorName(err) == "org.freedesktop.systemd1.NoSuchUnit" {
			return nil
		}
		return fmt.Errorf("systemd: stopping %s: %w", unit, err)
	}
	if err := waitJob(ctx, "stopping "+unit, ch); err != nil {
		return err
	}
	// A scope whose process was killed ends "failed" and stays loaded
	// until reset; the name must be free for the next pod or container.
	_ = s.do(func(c *sdbus.Conn) error { return c.ResetFailedUnitContext(ctx, unit) })
	return nil
}

// unitOf names the systemd unit whose cgroup path is, or "" when path is
// a plain directory (below a delegated scope, such as another runtime's).
func unitOf(p string) string {
	base := path.Base(p)
	if strings.HasSuffix(base, ".slice") || strings.HasSuffix(base, ".scope") {
		return strings.TrimPrefix(base, "_") // systemd's cg_escape
	}
	return ""
}

// unitProperties are the properties that carry res to systemd: it writes
// these files itself (again whenever it reloads), so what it holds must be
// what husk wrote. Accounting is turned on for the controllers Stats reads,
// which makes systemd enable them in the unit's ancestors.
func unitProperties(r *v2Resources) []sdbus.Property {
	prop := func(name string, v any) sdbus.Property {
		return sdbus.Property{Name: name, Value: godbus.MakeVariant(v)}
	}
	props := []sdbus.Property{
		prop("MemoryAccounting", true), prop("CPUAccounting", true),
		prop("TasksAccounting", true), prop("IOAccounting", true),
	}
	bytes := func(v int64) uint64 {
		if v < 0 || v == math.MaxInt64 {
			return math.MaxUint64 // systemd's infinity
		}
		return uint64(v)
	}
	if mem := r.res.Memory; mem != nil {
		if mem.Max != nil {
			props = append(props, prop("MemoryMax", bytes(*mem.Max)))
		}
		if mem.High != nil {
			props = append(props, prop("MemoryHigh", bytes(*mem.High)))
		}
		if mem.Swap != nil {
			props = append(props, prop("MemorySwapMax", bytes(*mem.Swap)))
		}
	}
	if cpu := r.res.CPU; cpu != nil {
		if cpu.Weight != nil {
			props = append(props, prop("CPUWeight", *cpu.Weight))
		}
		if cpu.Max != "" {
			if quota, period, ok := parseCPUMax(string(cpu.Max)); ok {
				perSec := uint64(math.MaxUint64)
				if quota > 0 {
					perSec = quota * 1_000_000 / period
				}
				props = append(props, prop("CPUQuotaPerSecUSec", perSec), prop("CPUQuotaPeriodUSec", period))
			}
		}
	}
	if p := r.res.Pids; p != nil && p.Max != 0 {
		props = append(props, prop("TasksMax", bytes(p.Max)))
	}
	for k, v := range r.unified {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if strings.TrimSpace(v) == "max" {
			n, err = -1, nil
		}
		if err != nil {
			continue
		}
		switch k {
		case "memory.high":
			props = append(props, prop("MemoryHigh", bytes(n)))
		case "memory.max":
			props = append(props, prop("MemoryMax", bytes(n)))
		case "memory.swap.max":
			props = append(props, prop("MemorySwapMax", bytes(n)))
		case "pids.max":
			props = append(props, prop("TasksMax", bytes(n)))
		}
	}
	return props
}

// parseCPUMax reads cpu.max's "<quota|max> <period>"; quota 0 means max.
func parseCPUMax(s string) (quota, period uint64, ok bool) {
	q, p, found := strings.Cut(s, " ")
	period, err := strconv.ParseUint(p, 10, 64)
	if !found || err != nil || period == 0 {
		return 0, 0, false
	}
	if q == "max" {
		return 0, period, true
	}
	quota, err = strconv.ParseUint(q, 10, 64)
	return quota, period, err == nil
}

// createSystemd is Create for the systemd driver.
func (m *Manager) createSystemd(p string, res *specs.LinuxResources, pids []int) (err error) {
	r, err := toV2(res)
	if err != nil {
		return err
	}
	unit := unitOf(p)
	if unit == "" {
		return m.createDelegated(p, res, pids)
	}
	parent := path.Dir(p)
	props := []sdbus.Property{sdbus.PropDescription("husk " + unit)}
	switch {
	case strings.HasSuffix(unit, ".slice"):
		// systemd puts a slice where its name says (SliceToPath): the
		// path must agree, and a slice holds no processes.
		if want, err := SliceToPath(unit); err != nil || want != p {
			return fmt.Errorf("%w: cgroup %s is not where systemd puts slice %s", errdefs.ErrInvalidArgument, p, unit)
		}
		if len(pids) > 0 {
			return fmt.Errorf("%w: a systemd slice holds no processes (cgroup %s)", errdefs.ErrInvalidArgument, p)
		}
	default:
		slice := "-.slice"
		if parent != "/" {
			slice = unitOf(parent)
			if want, err := SliceToPath(slice); err != nil || want != parent || !strings.HasSuffix(slice, ".slice") {
				return fmt.Errorf("%w: cgroup %s: a systemd scope belongs directly in a slice", errdefs.ErrInvalidArgument, p)
			}
		}
		if len(pids) == 0 {
			return fmt.Errorf("%w: a systemd scope starts with its first process: no pid for %s", errdefs.ErrInvalidArgument, p)
		}
		u32 := make([]uint32, len(pids))
		for i, pid := range pids {
			u32[i] = uint32(pid)
		}
		props = append(props, sdbus.PropSlice(slice), sdbus.PropPids(u32...),
			sdbus.Property{Name: "Delegate", Value: godbus.MakeVariant(true)},
			// Not stopped before the host's shutdown target: kubelet
			// stops containers, not systemd's ordering.
			sdbus.Property{Name: "DefaultDependencies", Value: godbus.MakeVariant(false)},
			// A scope whose process was killed ends failed; it must not
			// stay loaded and keep its name taken.
			sdbus.Property{Name: "CollectMode", Value: godbus.MakeVariant("inactive-or-failed")})
		if m.sd.oomPolicy {
			// One process killed for memory is the kernel's and kubelet's
			// business (memory.oom.group decides the rest), not a reason
			// for systemd to stop the container.
			props = append(props, sdbus.Property{Name: "OOMPolicy", Value: godbus.MakeVariant("continue")})
		}
	}
	props = append(props, unitProperties(r)...)
	exists, err := m.sd.start(unit, props)
	if err != nil {
		if dbusErrorName(err) == "org.freedesktop.DBus.Error.InvalidArgs" {
			return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
		}
		return err
	}
	defer func() {
		if err != nil && !exists {
			if serr := m.sd.stop(unit); serr != nil {
				err = errors.Join(err, fmt.Errorf("undo create: %w", serr))
			}
		}
	}()
	if exists {
		for _, pid := range pids {
			if err := m.addProcessV2(p, pid); err != nil {
				return err
			}
		}
	}
	return m.applyV2(p, res, true)
}

// createDelegated makes a plain cgroup directory below a scope delegated to
// husk: the processes go in before controllers are enabled above it, since
// the scope they leave may not hold processes and give its children
// controllers at once.
func (m *Manager) createDelegated(p string, res *specs.LinuxResources, pids []int) (err error) {
	delegated := false
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		if strings.HasSuffix(d, ".scope") {
			delegated = true
			break
		}
	}
	if !delegated {
		return fmt.Errorf("%w: cgroup %s: with the systemd driver a cgroup is a slice, a scope, or inside a scope", errdefs.ErrInvalidArgument, p)
	}
	created := m.missingTops(p)
	defer func() {
		if err != nil {
			for _, dir := range created {
				_ = removeTree(dir)
			}
		}
	}()
	if err := os.MkdirAll(filepath.Join(m.mountpoint, p), 0o755); err != nil {
		return err
	}
	for _, pid := range pids {
		if err := m.addProcessV2(p, pid); err != nil {
			return err
		}
	}
	return m.applyV2(p, res, true)
}
