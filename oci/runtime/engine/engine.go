// Package engine is how husk executes a container of a prepared bundle
// (its rootfs mounted, its OCI spec written, its cgroup made): a Runtime.
// husk's monitor (oci/runtime/shim/monitor.c) is the parent of every
// container, whichever runtime sets it up: it keeps the container's
// output, log, attach socket and exit. A Runtime says what the monitor
// runs (Launch), how to tell the container runs (WaitStarted), which
// process exec joins (Init), where its processes' cgroup is, and what it
// keeps after the container ends (Delete). Signals, stats and exec need
// nothing more of a runtime: husk reaches the container's processes
// through its cgroup and its first process's namespaces.
//
// Two kinds exist: Builtin, husk-runtime's own container-init, and Binary,
// a runc-compatible program (a RuntimeClass handler in husk's config).
package engine

import (
	"context"
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// Runtime executes the containers of prepared bundles under husk's
// monitor.
type Runtime interface {
	// Features are what the runtime offers beyond the OCI spec.
	Features() Features

	// PrepareSpec adapts a container's spec before it is written to its
	// bundle; it leaves s.Linux.Resources the limits the runtime applies
	// itself.
	PrepareSpec(s *specs.Spec) error
	// OuterLimits are the limits of husk's cgroup of the container, given
	// the spec's.
	OuterLimits(r *specs.LinuxResources) *specs.LinuxResources
	// InnerLimits are the limits of the runtime's own cgroup below
	// husk's (ProcessCgroup), given the container's; unused where the
	// two are one.
	InnerLimits(r *specs.LinuxResources) *specs.LinuxResources
	// ProcessCgroup is the cgroup the container's processes are in, which
	// an exec joins, given husk's cgroup of the container.
	ProcessCgroup(cgroup string) string
	// LaunchCgroup is the cgroup the monitor's child goes in where husk
	// places it (the systemd driver, whose scope starts with a process),
	// given husk's cgroup of the container.
	LaunchCgroup(cgroup string) string

	// Launch sets the runtime's part of the monitor's command line: its
	// flags and the program it runs. The files it returns are passed to
	// the monitor from descriptor monitor.FirstExtraFD on, in order.
	Launch(c *Container, a *monitor.Args) ([]*os.File, error)
	// WaitStarted returns once the container's process runs, after the
	// monitor's report channel closed without a failure; an error if the
	// runtime ended first (an *ExitedEarly) or took too long.
	WaitStarted(ctx context.Context, c *Container) error
	// Init is the container's first process inside its namespaces, which
	// exec joins, given the monitor's child (monitor.PIDFile); nil if the
	// runtime has none that runs (as far as it knows: callers check that
	// the process is still the one named).
	Init(c *Container, child *Process) *Process
	// Delete has the runtime forget a container whose processes are gone.
	Delete(ctx context.Context, id string) error
}

// Features are the CRI's RuntimeHandlerFeatures of a runtime.
type Features struct {
	RecursiveReadOnlyMounts bool
	UserNamespaces          bool
}

// Container is what a runtime is told of a container.
type Container struct {
	ID       string
	Bundle   string      // the OCI bundle: config.json, and the rootfs it names
	StateDir string      // the monitor's state directory (package monitor's files)
	Spec     *specs.Spec // as written to the bundle
	// Namespaces are the pod's pinned namespaces, which the container
	// joins.
	Namespaces map[ns.Type]string
	// CgroupProcs are the cgroup.procs files the monitor puts the
	// container's first process in, before it runs; none when the
	// daemon places it itself (monitor.Args.CgroupSync).
	CgroupProcs []string
}

// Process names a process by its pid and its start time (clock ticks
// after boot), which tell it from a later one with the same pid.
type Process struct {
	PID       int
	StartTime uint64
}

// ExitedEarly is WaitStarted's error when the runtime ended before the
// container's process ran; what it said went to the container's log.
type ExitedEarly struct {
	Runtime string
	Code    int // -1 if no exit was recorded
}

func (e *ExitedEarly) Error() string {
	return fmt.Sprintf("runtime %q exited with code %d before the container ran", e.Runtime, e.Code)
}

// PIDNamespace is the PID namespace of a spec: nil for the host's, one
// without a path for a new one.
func PIDNamespace(s *specs.Spec) *specs.LinuxNamespace {
	if s.Linux == nil {
		return nil
	}
	for _, n := range s.Linux.Namespaces {
		if n.Type == specs.PIDNamespace {
			return &n
		}
	}
	return nil
}
