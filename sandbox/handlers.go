package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/oci/runtime/engine"
)

// A runtime handler (Kubernetes' RuntimeClass) names the runtime that sets
// up a pod's containers (oci/runtime/engine): "" the built-in one, any
// other a runc-compatible binary of husk's config. The pod is husk's
// whichever it is (pinned namespaces, CNI, cgroup), and so is each
// container's monitor.

// SetRuntimes replaces the runtime handlers run by another runtime (a
// config reload). Pods of a handler taken out keep their containers, which
// can be stopped and removed, but start no new ones. A handler's new path
// is used from then on for all of its containers, running ones too (exec,
// delete): a new binary must be compatible with the old one's state (its
// root directory stays the same).
func (m *Manager) SetRuntimes(paths map[string]string) {
	paths = maps.Clone(paths)
	m.runtimes.Store(&paths)
}

func (m *Manager) runtimePaths() map[string]string {
	if p := m.runtimes.Load(); p != nil {
		return *p
	}
	return nil
}

// Handlers are the runtime handlers husk knows: "" (the built-in runtime)
// and the configured ones, sorted.
func (m *Manager) Handlers() []string {
	hs := []string{""}
	for name := range m.runtimePaths() {
		hs = append(hs, name)
	}
	slices.Sort(hs)
	return hs
}

// HandlerFeatures are what a handler's runtime offers; the kernel may offer
// less (cri's Status says what both do).
func (m *Manager) HandlerFeatures(handler string) engine.Features {
	return m.runtimeFor(handler).Features()
}

// runtimeFor is the runtime of a handler. One no longer in husk's config
// still finds and forgets its containers, but starts none.
func (m *Manager) runtimeFor(handler string) engine.Runtime {
	if handler == "" {
		return &engine.Builtin{Binary: m.opts.Binary}
	}
	b := &engine.Binary{Name: handler, Path: m.runtimePaths()[handler], Root: m.runtimeRoot(handler)}
	if m.opts.Cgroups != nil {
		b.Unified, b.Hugetlb = m.opts.Cgroups.Unified(), m.opts.Cgroups.HasHugetlb()
	}
	return b
}

// configuredRuntime is the runtime of a pod that is to run a container.
func (m *Manager) configuredRuntime(pod *Pod) (engine.Runtime, error) {
	if h := pod.RuntimeHandler; h != "" && m.runtimePaths()[h] == "" {
		return nil, fmt.Errorf("the pod's runtime handler %q is no longer configured: %w", h, errdefs.ErrFailedPrecondition)
	}
	return m.runtimeFor(pod.RuntimeHandler), nil
}

// runtimeOf is the runtime of a container's pod.
func (m *Manager) runtimeOf(c *Container) engine.Runtime {
	return m.withRestore(c, m.runtimeFor(m.handlerOf(c)))
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

// runtimeRoot is where a handler's runtime keeps its state (runc --root).
func (m *Manager) runtimeRoot(handler string) string {
	return filepath.Join(m.opts.State, "runtimes", handler)
}

// engineContainer is what a runtime is told of a container.
func (m *Manager) engineContainer(c *Container) *engine.Container {
	return &engine.Container{ID: c.ID, Bundle: m.bundleDir(c.ID), StateDir: m.containerDir(c.ID)}
}

// deleteRuntimeStates has every runtime that may still know a container
// forget it (after a crash: `run` deletes its state when the container
// ends). Called once the container's processes are gone; a runtime no
// longer configured, or one that fails, has its state removed by hand.
func (m *Manager) deleteRuntimeStates(id string) {
	dirs, _ := filepath.Glob(filepath.Join(m.opts.State, "runtimes", "*", id))
	for _, dir := range dirs {
		handler := filepath.Base(filepath.Dir(dir))
		err := m.runtimeFor(handler).Delete(context.Background(), id)
		if err == nil {
			continue
		}
		if !errors.Is(err, engine.ErrGone) {
			klog.ErrorS(err, "Deleting a container's runtime state", "handler", handler, "id", id)
		}
		if err := os.RemoveAll(dir); err != nil {
			klog.ErrorS(err, "Removing a container's runtime state", "dir", dir)
		}
	}
}

// checkHandler refuses what a handler's runtime cannot do for a pod.
func (m *Manager) checkHandler(handler string, userns bool) error {
	if handler == "" {
		return nil
	}
	if _, ok := m.runtimePaths()[handler]; !ok {
		return fmt.Errorf("runtime_handler: %q is not a runtime handler of husk (%q): %w", handler, m.Handlers(), errdefs.ErrInvalidArgument)
	}
	if userns && !m.HandlerFeatures(handler).UserNamespaces {
		return fmt.Errorf("%s: runtime handler %q runs no pods with user namespaces of their own: %w", usernsField, handler, errdefs.ErrInvalidArgument)
	}
	return nil
}

// containerInit is the running container's first process inside its
// namespaces, which exec joins and stop signals; nil if the container does
// not run.
func (m *Manager) containerInit(c *Container) *Process {
	p := m.running(c)
	if p == nil {
		return nil
	}
	ip := m.runtimeOf(c).Init(m.engineContainer(c), &engine.Process{PID: p.PID, StartTime: p.StartTime})
	if ip == nil {
		return nil
	}
	if ip.PID == p.PID && ip.StartTime == p.StartTime {
		return p
	}
	init := &Process{PID: ip.PID, StartTime: ip.StartTime, BootID: bootID()}
	if !alive(init) {
		return nil
	}
	return init
}

// processCgroup is the cgroup a container's processes are in, which an
// exec joins.
func (m *Manager) processCgroup(c *Container) string {
	return m.runtimeOf(c).ProcessCgroup(c.Cgroup)
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
