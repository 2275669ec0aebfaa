package linux

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

var capsByName = func() map[string]capability.Cap {
	m := map[string]capability.Cap{}
	for _, c := range capability.ListKnown() {
		m["CAP_"+strings.ToUpper(c.String())] = c
	}
	return m
}()

func caps(names []string) ([]capability.Cap, error) {
	var out []capability.Cap
	for _, n := range names {
		c, ok := capsByName[n]
		if !ok {
			return nil, fmt.Errorf("unknown capability %q", n)
		}
		if last, err := capability.LastCap(); err == nil && c > last {
			continue // newer than this kernel: nothing to grant or drop
		}
		out = append(out, c)
	}
	return out, nil
}

// becomeUser switches to the container's user and capabilities, in the
// order runc uses: the bounding set is cut while still root, the permitted
// set is kept across setuid (keepcaps), then the sets are applied. All of it
// happens on the thread that then executes the command (Go keeps init on
// the main thread).
func becomeUser(p *specs.Process) error {
	c, err := capability.NewPid2(0)
	if err != nil {
		return err
	}
	if err := c.Load(); err != nil {
		return err
	}
	// What the runtime itself does not have (here: root may lack
	// CAP_SYS_RESOURCE) no container can get; a privileged container gets
	// all the rest rather than failing.
	var have []capability.Cap
	for _, k := range capability.ListKnown() {
		if c.Get(capability.BOUNDING, k) {
			have = append(have, k)
		}
	}
	set := func(which capability.CapType, names []string) error {
		cs, err := caps(names)
		if err != nil {
			return err
		}
		c.Clear(which)
		for _, k := range cs {
			if slices.Contains(have, k) {
				c.Set(which, k)
			}
		}
		return nil
	}
	pc := p.Capabilities
	if pc == nil {
		pc = &specs.LinuxCapabilities{}
	}
	for _, s := range []struct {
		which capability.CapType
		names []string
	}{
		{capability.BOUNDING, pc.Bounding}, {capability.EFFECTIVE, pc.Effective},
		{capability.PERMITTED, pc.Permitted}, {capability.INHERITABLE, pc.Inheritable},
		{capability.AMBIENT, pc.Ambient},
	} {
		if err := set(s.which, s.names); err != nil {
			return err
		}
	}
	if err := c.Apply(capability.BOUNDS); err != nil {
		return fmt.Errorf("setting the bounding capabilities: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return err
	}
	gids := make([]int, 0, len(p.User.AdditionalGids))
	for _, g := range p.User.AdditionalGids {
		gids = append(gids, int(g))
	}
	if err := unix.Setgroups(gids); err != nil {
		return fmt.Errorf("setting supplementary groups: %w", err)
	}
	if err := unix.Setgid(int(p.User.GID)); err != nil {
		return fmt.Errorf("setting gid %d: %w", p.User.GID, err)
	}
	if err := unix.Setuid(int(p.User.UID)); err != nil {
		return fmt.Errorf("setting uid %d: %w", p.User.UID, err)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return err
	}
	if err := c.Apply(capability.CAPS); err != nil {
		return fmt.Errorf("setting capabilities: %w", err)
	}
	if len(pc.Ambient) > 0 {
		if err := c.Apply(capability.AMBS); err != nil {
			return fmt.Errorf("setting ambient capabilities: %w", err)
		}
	}
	return nil
}
