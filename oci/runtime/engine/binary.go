package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// Binary is a runc-compatible runtime (a RuntimeClass handler of husk's
// config): the monitor runs `PATH --root ROOT run --bundle BUNDLE
// --pid-file STATE/runtime.pid ID`, which puts the container in its
// namespaces and cgroup itself, from the spec, and stays its parent. The
// pod is husk's as for the built-in runtime (pinned namespaces, CNI, the
// pod's cgroup); the spec is the one husk writes for its own runtime.
type Binary struct {
	Name string // the handler
	// Path is the runtime's executable; "" for a handler no longer in
	// husk's config, whose containers can still be found and forgotten
	// but not started.
	Path string
	Root string // where the runtime keeps its state (runc --root)
	// The node's cgroups: v2 (else v1), and whether the hugetlb
	// controller is there.
	Unified, Hugetlb bool
}

var _ Runtime = (*Binary)(nil)

// Features: husk cannot tell whether another runtime makes mounts read-only
// all the way down (runc does since 1.2), and it runs no pods with user
// namespaces of their own.
func (b *Binary) Features() Features { return Features{} }

// innerCgroup is the name of the runtime's cgroup below husk's of the
// container.
const innerCgroup = "runtime"

// PrepareSpec: the runtime gets a cgroup below the container's, because
// runc removes the cgroup it ran in when the container ends, and the
// monitor reads the container's OOM kills in husk's after that. Both have
// the limits (the container sees its own in its cgroup), but on cgroup v1
// the memory limit is husk's alone: v1 counts an OOM kill, and signals an
// OOM, only where it happens.
func (b *Binary) PrepareSpec(s *specs.Spec) error {
	if err := trimCapabilities(s); err != nil {
		return err
	}
	if s.Linux == nil {
		return nil
	}
	s.Linux.CgroupsPath = path.Join(s.Linux.CgroupsPath, innerCgroup)
	s.Linux.Resources = b.InnerLimits(s.Linux.Resources)
	return nil
}

// OuterLimits: husk's cgroup also allows the device rules runc adds to
// every container's (mknod of any device, /dev/net/tun), which a parent
// must allow for the runtime to.
func (b *Binary) OuterLimits(r *specs.LinuxResources) *specs.LinuxResources {
	if r == nil {
		return nil
	}
	all := int64(-1)
	tunMajor, tunMinor := int64(10), int64(200)
	outer := *r
	outer.Devices = append(slices.Clone(r.Devices),
		specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &all, Minor: &all, Access: "m"},
		specs.LinuxDeviceCgroup{Allow: true, Type: "b", Major: &all, Minor: &all, Access: "m"},
		specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &tunMajor, Minor: &tunMinor, Access: "rwm"})
	return &outer
}

// InnerLimits: all of the container's on cgroup v2, all but memory on v1
// (PrepareSpec); hugepage limits only where the hugetlb controller is
// (kubelet sends one for every page size the node has, and runc refuses to
// start a container whose limits it cannot set).
func (b *Binary) InnerLimits(r *specs.LinuxResources) *specs.LinuxResources {
	if r == nil {
		return nil
	}
	inner := *r
	if !b.Unified {
		inner.Memory = nil
	}
	if !b.Hugetlb {
		inner.HugepageLimits = nil
	}
	return &inner
}

func (b *Binary) ProcessCgroup(cgroup string) string { return path.Join(cgroup, innerCgroup) }

func (b *Binary) pidFile(c *Container) string {
	return filepath.Join(c.StateDir, monitor.RuntimePIDFile)
}

// ErrGone is Launch's error for a handler no longer in husk's config.
var ErrGone = errors.New("runtime handler no longer configured")

// Launch: should the runtime die before the container, the monitor waits
// for the container's process, named in the runtime's pid file, instead;
// on cgroup v1 it listens for OOMs, which v1 counts in the runtime's
// cgroup, which the runtime removes.
func (b *Binary) Launch(c *Container, a *monitor.Args) ([]*os.File, error) {
	if b.Path == "" {
		return nil, fmt.Errorf("the pod's runtime handler %q is no longer configured: %w", b.Name, errdefs.ErrFailedPrecondition)
	}
	a.RuntimePIDFile = b.pidFile(c)
	a.OOMNotify = !b.Unified
	a.Program = []string{b.Path, "--root", b.Root, "run", "--bundle", c.Bundle, "--pid-file", b.pidFile(c), c.ID}
	return nil, nil
}

// WaitStarted waits for the runtime's pid file: the runtime, unlike the
// built-in one, says nothing on the monitor's report channel, and its
// errors go to the container's log.
func (b *Binary) WaitStarted(ctx context.Context, c *Container) error {
	for {
		// The pid file, not the runtime's state: a short command may have
		// run and ended already.
		if _, err := os.Stat(b.pidFile(c)); err == nil {
			return nil
		}
		if _, err := os.Stat(filepath.Join(c.StateDir, monitor.ExitFile)); err == nil {
			if _, err := os.Stat(b.pidFile(c)); err == nil {
				return nil
			}
			code := -1
			if e, err := monitor.ReadExit(c.StateDir); err == nil {
				code = int(e.Code)
			}
			return &ExitedEarly{Runtime: b.Name, Code: code}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("runtime %q did not start the container: %w", b.Name, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// state is what a runc-compatible runtime records of a container
// (libcontainer's state.json): its init process.
type state struct {
	InitPID   int    `json:"init_process_pid"`
	InitStart uint64 `json:"init_process_start"`
}

// Init is the runtime's init of the container, the one in its namespaces:
// the monitor's child is the runtime itself, which stays outside them.
func (b *Binary) Init(c *Container, _ *Process) *Process {
	bs, err := os.ReadFile(filepath.Join(b.Root, c.ID, "state.json"))
	if err != nil {
		return nil
	}
	var st state
	if json.Unmarshal(bs, &st) != nil || st.InitPID <= 0 {
		return nil
	}
	return &Process{PID: st.InitPID, StartTime: st.InitStart}
}

// Delete: `run` deletes the runtime's state when the container ends; after
// a crash it may still be there.
func (b *Binary) Delete(ctx context.Context, id string) error {
	if b.Path == "" {
		return fmt.Errorf("deleting container %s: %w", id, ErrGone)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.Path, "--root", b.Root, "delete", "--force", id).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s delete %s: %w: %s", b.Path, id, err, out)
	}
	return nil
}

// trimCapabilities leaves out of a spec the capabilities husk itself has
// not (root may lack CAP_SYS_RESOURCE): no runtime can give them, and runc
// fails a container that asks, where husk's own runtime gives a privileged
// container all the others.
func trimCapabilities(s *specs.Spec) error {
	if s.Process == nil || s.Process.Capabilities == nil {
		return nil
	}
	c, err := capability.NewPid2(0)
	if err != nil {
		return err
	}
	if err := c.Load(); err != nil {
		return err
	}
	have := map[string]bool{}
	for _, k := range capability.ListKnown() {
		if c.Get(capability.BOUNDING, k) {
			have["CAP_"+strings.ToUpper(k.String())] = true
		}
	}
	keep := func(names []string) []string {
		return slices.DeleteFunc(names, func(n string) bool { return !have[n] })
	}
	pc := s.Process.Capabilities
	pc.Bounding, pc.Effective, pc.Permitted = keep(pc.Bounding), keep(pc.Effective), keep(pc.Permitted)
	pc.Inheritable, pc.Ambient = keep(pc.Inheritable), keep(pc.Ambient)
	return nil
}
