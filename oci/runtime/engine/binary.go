package engine

import (
	"bytes"
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
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/oci/runtime/checkpoint"
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

// Features: "rro" mounts as the runtime's own `features` command says
// (runc has it; crun 1.8 has no such command, and is then taken to offer
// none); no pods with user namespaces of their own, whatever the runtime:
// husk makes those with its own runtime only.
func (b *Binary) Features() Features {
	if b.Path == "" {
		return Features{}
	}
	f := probeFeatures(b.Path)
	return Features{RecursiveReadOnlyMounts: slices.Contains(f.MountOptions, "rro")}
}

var probed sync.Map // runtime path -> *features.Features

// probeFeatures runs `PATH features` once per path: the OCI runtime
// features document, or an empty one when the runtime has no such
// command.
func probeFeatures(path string) *features.Features {
	if f, ok := probed.Load(path); ok {
		return f.(*features.Features)
	}
	f := &features.Features{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "features").Output()
	if err == nil {
		err = json.Unmarshal(out, f)
	}
	if err != nil {
		klog.InfoS("The runtime tells no features; it is taken to offer none beyond the OCI spec", "runtime", path, "err", err)
		f = &features.Features{}
	}
	actual, _ := probed.LoadOrStore(path, f)
	return actual.(*features.Features)
}

// innerCgroup is the name of the runtime's cgroup below husk's of the
// container.
const innerCgroup = "runtime"

// PrepareSpec: the runtime gets a cgroup below the container's, because
// runc removes the cgroup it ran in when the container ends, and the
// monitor reads the container's OOM kills in husk's after that. Both have
// the limits (the container sees its own in its cgroup), but on cgroup v1
// the memory limit is husk's alone: v1 counts an OOM kill, and signals an
// OOM, only where it happens.
//
// The spec's version is the newest the runtime says it reads (crun 1.8
// refuses a version it does not know, such as 1.3.0, the one husk's spec
// package writes; runc reads any): what husk writes is in OCI 1.0.2 but
// for fields older runtimes ignore.
func (b *Binary) PrepareSpec(s *specs.Spec) error {
	if err := trimCapabilities(s); err != nil {
		return err
	}
	s.Version = "1.0.2"
	if b.Path != "" {
		if v := probeFeatures(b.Path).OCIVersionMax; v != "" {
			s.Version = v
		}
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

// launchCgroup is the name of the cgroup the runtime itself runs in, where
// husk places it, beside innerCgroup.
const launchCgroup = "launcher"

// LaunchCgroup: a leaf beside the container's processes, not above or
// among them: when the container ends, the runtime kills every process of
// the container's cgroup and below (crun writes its cgroup.kill), which
// would be itself, before it reports the exit status or prints its error.
// Not the scope itself either: the runtime enables controllers for the
// scope's children, which a cgroup v2 holding processes cannot.
func (b *Binary) LaunchCgroup(cgroup string) string { return path.Join(cgroup, launchCgroup) }

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
	// The pid file, not the runtime's state: a short command may have
	// run and ended already.
	return waitLaunched(ctx, c, b.Name, func() bool {
		_, err := os.Stat(b.pidFile(c))
		return err == nil
	})
}

// waitLaunched polls until started says the monitor's program got the
// container running, or the monitor recorded its end first (an
// *ExitedEarly of runtime, unless started says so after all: the
// container ran and ended), or ctx ends.
func waitLaunched(ctx context.Context, c *Container, runtime string, started func() bool) error {
	for {
		if started() {
			return nil
		}
		if _, err := os.Stat(filepath.Join(c.StateDir, monitor.ExitFile)); err == nil {
			if started() {
				return nil
			}
			code := -1
			if e, err := monitor.ReadExit(c.StateDir); err == nil {
				code = int(e.Code)
			}
			return &ExitedEarly{Runtime: runtime, Code: code}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("runtime %q did not start the container: %w", runtime, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// runcState is what runc (libcontainer) records of a container in
// ROOT/ID/state.json; crunStatus what crun records in ROOT/ID/status.
// Either names the container's init and its start time.
type runcState struct {
	InitPID   int    `json:"init_process_pid"`
	InitStart uint64 `json:"init_process_start"`
}

type crunStatus struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"process-start-time"`
}

// Init is the runtime's init of the container, the one in its namespaces:
// the monitor's child is the runtime itself, which stays outside them.
// It is read from the runtime's own record (runc's or crun's layout)
// rather than by running `state`, since every exec and stop asks.
func (b *Binary) Init(c *Container, _ *Process) *Process {
	dir := filepath.Join(b.Root, c.ID)
	if bs, err := os.ReadFile(filepath.Join(dir, "state.json")); err == nil {
		var st runcState
		if json.Unmarshal(bs, &st) != nil || st.InitPID <= 0 {
			return nil
		}
		return &Process{PID: st.InitPID, StartTime: st.InitStart}
	}
	if bs, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
		var st crunStatus
		if json.Unmarshal(bs, &st) != nil || st.PID <= 0 {
			return nil
		}
		return &Process{PID: st.PID, StartTime: st.Start}
	}
	return nil
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

// Checkpoint has the runtime dump a running container with CRIU
// (`checkpoint --leave-running`) into dir/checkpoint.ImagesDir, its work
// files (CRIU's log) beside them; the runtime names the mounts and
// namespaces from outside itself, from the container's config.
func (b *Binary) Checkpoint(ctx context.Context, c *Container, criu, dir string) error {
	if b.Path == "" {
		return fmt.Errorf("the pod's runtime handler %q is no longer configured: %w", b.Name, errdefs.ErrFailedPrecondition)
	}
	images := filepath.Join(dir, checkpoint.ImagesDir)
	out, err := exec.CommandContext(ctx, b.Path, "--root", b.Root, "--criu", criu, "checkpoint", "--leave-running", "--file-locks",
		"--image-path", images, "--work-path", images, c.ID).CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s checkpoint: %w", b.Name, ctx.Err())
		}
		return fmt.Errorf("%s checkpoint: %v: %s%s: %w", b.Name, err, bytes.TrimSpace(out), checkpoint.LogErrors(filepath.Join(images, checkpoint.DumpLog)), errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Pause freezes the container through the runtime (`pause`), which then
// knows it is: its checkpoint of a container frozen behind its back fails
// and leaves the container's own cgroup frozen.
func (b *Binary) Pause(ctx context.Context, id string) error {
	return b.command(ctx, "pause", id)
}

// Resume undoes Pause.
func (b *Binary) Resume(ctx context.Context, id string) error {
	return b.command(ctx, "resume", id)
}

func (b *Binary) command(ctx context.Context, args ...string) error {
	if b.Path == "" {
		return fmt.Errorf("the pod's runtime handler %q is no longer configured: %w", b.Name, errdefs.ErrFailedPrecondition)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, b.Path, append([]string{"--root", b.Root}, args...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", b.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// restoreProgram is the monitor's program for a container of this runtime
// restored from a checkpoint: `restore`, which stays the container's
// parent as `run` does, and gives the restored processes its own output
// in place of what they wrote to.
func (b *Binary) restoreProgram(c *Container, criu, dir, work string) []string {
	return []string{b.Path, "--root", b.Root, "--criu", criu, "restore", "--file-locks", "--image-path", filepath.Join(dir, checkpoint.ImagesDir),
		"--work-path", work, "--bundle", c.Bundle, "--pid-file", b.pidFile(c), c.ID}
}
