package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/oci/runtime/cgroups"
	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// A runtime handler (Kubernetes' RuntimeClass) other than the built-in
// runtime ("") is a runc-compatible binary: the pod is husk's as always
// (pinned namespaces, CNI, cgroup), and each container of it is run by
// `BINARY --root <state>/runtimes/<handler> run --bundle BUNDLE ID` under
// husk's monitor, which keeps its output, its log and its exit as for any
// container. The spec is the one husk writes for its own runtime, whose
// namespaces are the pod's pinned files; exec joins the container through
// its init's namespaces as for the built-in runtime.

// Handlers are the runtime handlers husk knows: "" (the built-in runtime)
// and the configured ones, sorted.
func (m *Manager) Handlers() []string {
	hs := []string{""}
	for name := range m.opts.Runtimes {
		hs = append(hs, name)
	}
	slices.Sort(hs)
	return hs
}

// runtimePath is the binary of a handler; "" for the built-in runtime.
func (m *Manager) runtimePath(handler string) string {
	return m.opts.Runtimes[handler]
}

// runtimeRoot is where a handler's runtime keeps its state (runc --root).
func (m *Manager) runtimeRoot(handler string) string {
	return filepath.Join(m.opts.State, "runtimes", handler)
}

// runtimeArgs are the monitor's program for a container of a pod run by
// another runtime than the built-in one.
func (m *Manager) runtimeArgs(handler, id string) []string {
	return []string{m.runtimePath(handler), "--root", m.runtimeRoot(handler), "run", "--bundle", m.bundleDir(id), "--pid-file", m.runtimePIDFile(id), id}
}

// runtimePIDFile is where the runtime writes the container's pid once its
// process runs; it stays after the container ends.
func (m *Manager) runtimePIDFile(id string) string {
	return filepath.Join(m.containerDir(id), monitor.RuntimePIDFile)
}

// runtimeState is what a runc-compatible runtime records of a container
// (libcontainer's state.json): its init process.
type runtimeState struct {
	InitPID   int    `json:"init_process_pid"`
	InitStart uint64 `json:"init_process_start"`
}

// runtimeInit is the first process of a container run by another runtime:
// the one in the container's namespaces (the monitor's child is the
// runtime itself, which stays outside them). nil if the runtime has no
// live one.
func (m *Manager) runtimeInit(handler, id string) *Process {
	b, err := os.ReadFile(filepath.Join(m.runtimeRoot(handler), id, "state.json"))
	if err != nil {
		return nil
	}
	var st runtimeState
	if json.Unmarshal(b, &st) != nil || st.InitPID <= 0 {
		return nil
	}
	p := &Process{PID: st.InitPID, StartTime: st.InitStart, BootID: bootID()}
	if !alive(p) {
		return nil
	}
	return p
}

// waitRuntimeStarted waits until the runtime of a container runs its
// process, or reports why it did not: the runtime, unlike the built-in
// one, says nothing on the monitor's report pipe, and its errors go to
// the container's log.
func (m *Manager) waitRuntimeStarted(c *Container, handler string) error {
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		// The pid file, not the runtime's state: a short command may have
		// run and ended already.
		if _, err := os.Stat(m.runtimePIDFile(c.ID)); err == nil {
			return nil
		}
		if _, err := os.Stat(filepath.Join(m.containerDir(c.ID), monitor.ExitFile)); err == nil {
			if _, err := os.Stat(m.runtimePIDFile(c.ID)); err == nil {
				return nil
			}
			m.refresh(c)
			m.mu.Lock()
			exit := c.Exit
			m.mu.Unlock()
			code := -1
			if exit != nil {
				code = int(exit.Code)
			}
			return fmt.Errorf("runtime %q exited with code %d before the container ran: %s", handler, code, stderrTail(c, 512))
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("runtime %q did not start the container within %v", handler, startTimeout)
}

// deleteRuntimeStates has every runtime that may still know a container
// forget it (after a crash: `run` deletes its state when the container
// ends). Called once the container's processes are gone; a runtime no
// longer configured, or one that fails, has its state removed by hand.
func (m *Manager) deleteRuntimeStates(id string) {
	dirs, _ := filepath.Glob(filepath.Join(m.opts.State, "runtimes", "*", id))
	for _, dir := range dirs {
		handler := filepath.Base(filepath.Dir(dir))
		if bin := m.runtimePath(handler); bin != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			out, err := exec.CommandContext(ctx, bin, "--root", m.runtimeRoot(handler), "delete", "--force", id).CombinedOutput()
			cancel()
			if err == nil {
				continue
			}
			klog.ErrorS(err, "Deleting a container's runtime state", "handler", handler, "id", id, "output", string(out))
		}
		if err := os.RemoveAll(dir); err != nil {
			klog.ErrorS(err, "Removing a container's runtime state", "dir", dir)
		}
	}
}

// checkHandler refuses what another runtime cannot do for a pod.
func (m *Manager) checkHandler(handler string, userns bool) error {
	if handler == "" {
		return nil
	}
	if _, ok := m.opts.Runtimes[handler]; !ok {
		return fmt.Errorf("runtime_handler: %q is not a runtime handler of husk (%q): %w", handler, m.Handlers(), errdefs.ErrInvalidArgument)
	}
	if userns {
		return fmt.Errorf("%s: runtime handler %q runs no pods with user namespaces of their own: %w", usernsField, handler, errdefs.ErrInvalidArgument)
	}
	return nil
}

// handlerOf is the runtime handler of a container's pod.
func (m *Manager) handlerOf(c *Container) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.pods[c.PodID]; p != nil {
		return p.RuntimeHandler
	}
	return ""
}

// containerInit is the running container's first process inside its
// namespaces, which exec joins: the monitor's child for husk's runtime,
// the runtime's init for another; nil if the container does not run.
func (m *Manager) containerInit(c *Container) *Process {
	p := m.running(c)
	if p == nil {
		return nil
	}
	if h := m.handlerOf(c); h != "" {
		return m.runtimeInit(h, c.ID)
	}
	return p
}

// stderrTail is the end of what a container's CRI log holds of stderr,
// at most max bytes: what a runtime said when it failed.
func stderrTail(c *Container, max int) string {
	f, err := openLog(c)
	if err != nil {
		return "(no log)"
	}
	defer func() { _ = f.Close() }()
	// The end is what the runtime said last.
	if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
		_, _ = f.Seek(fi.Size()-64<<10, io.SeekStart)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "(no log)"
	}
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		// TIMESTAMP STREAM P|F TEXT
		if f := strings.SplitN(line, " ", 4); len(f) == 4 && f[1] == "stderr" {
			out = append(out, f[3])
		}
	}
	msg := strings.Join(out, " ")
	if len(msg) > max {
		msg = "..." + msg[len(msg)-max:]
	}
	return msg
}

// trimCapabilities leaves out of a spec the capabilities husk itself has
// not (root may lack CAP_SYS_RESOURCE): no runtime can give them, and runc
// fails a container that asks, where husk's own runtime gives a
// privileged container all the others.
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

// processCgroup is the cgroup a container's processes are in, which an
// exec joins: for another runtime, its cgroup below husk's.
func (m *Manager) processCgroup(c *Container) string {
	if m.handlerOf(c) != "" {
		return path.Join(c.Cgroup, runtimeCgroup)
	}
	return c.Cgroup
}

// runtimeCgroup is the name of another runtime's cgroup below the
// container's.
const runtimeCgroup = "runtime"

// handlerCgroupResources are the limits of husk's cgroup of a container
// another runtime runs, the parent of the runtime's: the container's, and
// the device rules runc adds, which a parent must allow for the runtime to.
func handlerCgroupResources(r *specs.LinuxResources) *specs.LinuxResources {
	if r == nil {
		return nil
	}
	parent := *r
	parent.Devices = append(slices.Clone(r.Devices), runcDeviceRules()...)
	return &parent
}

// runcDeviceRules are the rules runc adds to every container's (mknod of
// any device, /dev/net/tun): the container's cgroup allows them too, or
// the runtime could not, below it.
func runcDeviceRules() []specs.LinuxDeviceCgroup {
	all := int64(-1)
	tunMajor, tunMinor := int64(10), int64(200)
	return []specs.LinuxDeviceCgroup{
		{Allow: true, Type: "c", Major: &all, Minor: &all, Access: "m"},
		{Allow: true, Type: "b", Major: &all, Minor: &all, Access: "m"},
		{Allow: true, Type: "c", Major: &tunMajor, Minor: &tunMinor, Access: "rwm"},
	}
}

// runtimeResources are the limits another runtime's cgroup gets, below
// husk's: all of them on cgroup v2, all but memory on v1 (see
// CreateContainer); hugepage limits only where the hugetlb controller is
// (kubelet sends one for every page size the node has, and runc refuses
// to start a container whose limits it cannot set).
func runtimeResources(r *specs.LinuxResources, cg *cgroups.Manager) *specs.LinuxResources {
	if r == nil {
		return nil
	}
	out := *r
	if !cg.Unified() {
		out.Memory = nil
	}
	if !cg.HasHugetlb() {
		out.HugepageLimits = nil
	}
	return &out
}
