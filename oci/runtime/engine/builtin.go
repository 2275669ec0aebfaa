package engine

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// Builtin is husk's own runtime: the monitor starts `husk-runtime
// container-init BUNDLE` from the sealed binary, in the pod's namespaces
// and the container's cgroup, and that sets the container up from the
// spec and executes its command (oci/runtime/linux).
type Builtin struct {
	// Binary is the sealed copy of husk-runtime
	// (oci/runtime/linux.SealedBinary): nothing in a container can reach
	// the file it runs from on the host.
	Binary *os.File
}

var _ Runtime = (*Builtin)(nil)

// Features: all, where the kernel has them (which the caller checks).
func (b *Builtin) Features() Features {
	return Features{RecursiveReadOnlyMounts: true, UserNamespaces: true}
}

// PrepareSpec refuses OCI hooks, which only CDI specs and NRI plugins put
// in husk's specs: the built-in runtime runs none. (A runc handler does.)
func (b *Builtin) PrepareSpec(s *specs.Spec) error {
	if h := s.Hooks; h != nil && len(h.Prestart)+len(h.CreateRuntime)+len(h.CreateContainer)+len(h.StartContainer)+len(h.Poststart)+len(h.Poststop) > 0 { //nolint:staticcheck // Prestart is deprecated, and still a hook
		return fmt.Errorf("the spec has OCI hooks (from the CDI specs of config.CDI_devices, or from NRI plugins), which husk's own runtime does not run (a runc runtime handler does): %w", errdefs.ErrFailedPrecondition)
	}
	return nil
}

func (b *Builtin) OuterLimits(r *specs.LinuxResources) *specs.LinuxResources { return r }

func (b *Builtin) InnerLimits(r *specs.LinuxResources) *specs.LinuxResources { return r }

func (b *Builtin) ProcessCgroup(cgroup string) string { return cgroup }

// LaunchCgroup: the monitor's child is the container's process.
func (b *Builtin) LaunchCgroup(cgroup string) string { return cgroup }

// Launch: the sealed binary is the monitor's first extra descriptor, which
// it executes in the pod's namespaces; the monitor writes the container's
// oom_score_adj, which a runtime in a pod's user namespace cannot (its
// /proc files are the host root's).
func (b *Builtin) Launch(c *Container, a *monitor.Args) ([]*os.File, error) {
	a.ExecFD = monitor.FirstExtraFD
	a.Cgroups = c.CgroupProcs
	for t, p := range c.Namespaces {
		switch t {
		case ns.User:
			a.UserNS = p
		case ns.Net:
			a.NetNS = p
		case ns.IPC:
			a.IPCNS = p
		case ns.UTS:
			a.UTSNS = p
		}
	}
	if c.Spec.Process != nil && c.Spec.Process.OOMScoreAdj != nil {
		adj := *c.Spec.Process.OOMScoreAdj
		a.OOMScoreAdj = &adj
	}
	// The PID namespace is the one the spec says: the pod's, a new one,
	// or (no entry) the host's.
	if pidNS := PIDNamespace(c.Spec); pidNS != nil {
		if pidNS.Path != "" {
			a.PIDNS = pidNS.Path
		} else {
			a.NewPID = true
		}
	}
	a.Program = []string{"husk-runtime", "container-init", c.Bundle}
	return []*os.File{b.Binary}, nil
}

// WaitStarted: container-init reports a failure on the monitor's report
// channel and closes it by executing the command; nothing more to wait for.
func (b *Builtin) WaitStarted(context.Context, *Container) error { return nil }

// Init is the monitor's child, which became the container's command.
func (b *Builtin) Init(_ *Container, child *Process) *Process { return child }

func (b *Builtin) Delete(context.Context, string) error { return nil }
