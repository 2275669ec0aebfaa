package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/fsnotify/fsnotify"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/husk-runtime/husk/internal/pidwatch"
	"github.com/husk-runtime/husk/network"
	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/image"
	"github.com/husk-runtime/husk/oci/runtime/cgroups"
	"github.com/husk-runtime/husk/oci/runtime/execserver"
	"github.com/husk-runtime/husk/sandbox/nri"
)

// Options configure a Manager.
type Options struct {
	// Root holds what survives a reboot: pod records and pod files.
	Root string
	// State holds what must not: pinned namespaces, /dev/shm mounts.
	State   string
	Network *network.Manager
	Cgroups *cgroups.Manager
	// Binary is the sealed copy of husk-runtime (oci/runtime/linux.SealedBinary)
	// that the pod init, the container monitors and the runtime run from.
	Binary *os.File
	Images *image.Store
	// Runtimes are the runtime handlers (RuntimeClass) run by another
	// runtime than husk's own: a runc-compatible binary by handler name.
	Runtimes map[string]string
	// AppArmor: the host enforces AppArmor (oci/runtime/apparmor.Enabled),
	// and containers run under a profile.
	AppArmor bool
	// CDI resolves CDI device names; nil when CDI is off.
	CDI *cdi.Cache
	// CRIU is the criu binary checkpoints and restores run; "" when
	// there is none.
	CRIU string
	// StatsMaxAge is how old a sample the stats Lists and the metrics
	// answer with (collect.go); 0 reads at each call.
	StatsMaxAge time.Duration
}

// Manager keeps every pod. It is safe for concurrent use; calls on one pod
// are serialized, calls on different pods run in parallel.
type Manager struct {
	opts Options
	// runtimes is opts.Runtimes, or what a config reload set (SetRuntimes).
	runtimes atomic.Pointer[map[string]string]

	mu     sync.Mutex
	pods   map[string]*Pod
	names  map[string]string // pod key -> id
	locks  map[string]*sync.Mutex
	starts map[string]*start // pod key -> RunPodSandbox in progress

	containers map[string]*Container
	cnames     map[string]string // container key -> id
	// creating is the list size of containers being created (budget.go).
	creating int

	// noUserns says why pods cannot have user namespaces of their own
	// here, once UserNamespacesSupported found out.
	noUserns error

	samplesMu sync.Mutex
	samples   map[string][2]cpuSample // pod or container id -> its two latest CPU samples
	// What was sampled of each running container and ready pod, by id
	// (collect.go): its use, its metrics' series, its writable layer's
	// last walk.
	used         sampleCache[Usage]
	metricSeries sampleCache[[]*runtimeapi.Metric]
	layers       sampleCache[layerSample]
	// They take new samples after the Lists that answered from them.
	statsResample, metricsResample resampler
	closed                         atomic.Bool

	events events
	exits  *fsnotify.Watcher // exitwatch.go
	// monitors has a pidfd on each running container's monitor.
	monitors *pidwatch.Watcher
	// nri is set once, as the daemon starts serving, while the exit
	// watch may already report exits (plugins()).
	nri atomic.Pointer[nri.NRI]
	// execs makes ExecSync's processes (container_exec.go).
	execs *execserver.Server
}

type start struct {
	// size is the pod's list item's (budget.go).
	size int
	done chan struct{}
	id   string
	err  error
}

// New opens the pods under opts.Root and brings each to a state the CRI
// can express (see restore).
func New(ctx context.Context, opts Options) (*Manager, error) {
	m := &Manager{
		opts: opts, pods: map[string]*Pod{}, names: map[string]string{}, locks: map[string]*sync.Mutex{},
		starts: map[string]*start{}, containers: map[string]*Container{}, cnames: map[string]string{},
	}
	m.SetRuntimes(opts.Runtimes)
	m.execs = execserver.New(m.execServerCommand)
	// Each pod's and container's own directory is 0700 (see
	// privateDir); these may be passed through by the root of a pod's
	// user namespace, which reaches its container's bundle.
	for _, d := range []string{m.podsRoot(), m.podsState(), m.containersRoot(), m.containersState()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, err
		}
		// Earlier builds made these 0700 and their children 0711.
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, err
		}
		entries, err := os.ReadDir(d)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.IsDir() {
				if info, err := e.Info(); err == nil && info.Mode().Perm() == 0o711 {
					_ = os.Chmod(filepath.Join(d, e.Name()), 0o700)
				}
			}
		}
	}
	if err := ns.PrepareDir(m.podsState()); err != nil {
		return nil, err
	}
	// The pod init's root: empty, and not writable by it.
	if err := os.MkdirAll(m.emptyDir(), 0o555); err != nil {
		return nil, err
	}
	if err := m.startExitWatch(); err != nil {
		return nil, fmt.Errorf("watching containers for their exits: %w", err)
	}
	if err := m.restoreContainers(); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.restore(ctx); err != nil {
		m.Close()
		return nil, err
	}
	// Layers of the images containers run from stay, even when the image
	// is removed.
	opts.Images.SetInUse(m.layersInUse)
	return m, nil
}

func (m *Manager) podsRoot() string          { return filepath.Join(m.opts.Root, "pods") }
func (m *Manager) podsState() string         { return filepath.Join(m.opts.State, "pods") }
func (m *Manager) rootDir(id string) string  { return filepath.Join(m.podsRoot(), id) }
func (m *Manager) stateDir(id string) string { return filepath.Join(m.podsState(), id) }
func (m *Manager) nsPath(id string, t ns.Type) string {
	return filepath.Join(m.stateDir(id), "ns-"+string(t))
}

// Network is the CNI manager, for the runtime's Status.
func (m *Manager) Network() *network.Manager { return m.opts.Network }

// CgroupDriver is the kubelet cgroup driver husk is configured for.
func (m *Manager) CgroupDriver() cgroups.Driver { return m.opts.Cgroups.Driver() }

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// lockID serializes calls on one pod or one container, by its id.
func (m *Manager) lockID(id string) func() {
	m.mu.Lock()
	l, ok := m.locks[id]
	if !ok {
		l = &sync.Mutex{}
		m.locks[id] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// update changes a pod's fields under m.mu, so that List and Get see them
// whole, then saves its record. Only the holder of the pod's lock calls it.
func (m *Manager) update(p *Pod, fn func(*Pod)) error {
	m.mu.Lock()
	if fn != nil {
		fn(p)
	}
	b, err := p.encode()
	m.mu.Unlock()
	if err != nil {
		return err
	}
	if err := writeRecord(m.rootDir(p.ID), "pod.json", b); err != nil {
		return fmt.Errorf("saving pod %s: %w", p.ID, err)
	}
	return nil
}

// Get returns a copy of the pod with the given id, or of the only pod whose
// id starts with it (crictl accepts id prefixes). A pod still being
// created is not there yet: kubelet must not take it for a failed one.
func (m *Manager) Get(id string) (*Pod, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, err := m.findLocked(id)
	if err != nil {
		return nil, err
	}
	if p.State == Creating {
		return nil, fmt.Errorf("pod sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	return copyPod(p), nil
}

func (m *Manager) findLocked(id string) (*Pod, error) {
	return findByID(m.pods, id, "pod sandbox")
}

// findByID finds what an id, or a prefix of exactly one id (crictl takes
// prefixes), names in objs; what names their kind in errors.
func findByID[T any](objs map[string]T, id, what string) (T, error) {
	var found T
	if id == "" {
		return found, fmt.Errorf("%s id is empty: %w", what, errdefs.ErrInvalidArgument)
	}
	if o, ok := objs[id]; ok {
		return o, nil
	}
	n := 0
	for oid, o := range objs {
		if strings.HasPrefix(oid, id) {
			if n++; n > 1 {
				var none T
				return none, fmt.Errorf("%s id prefix %q is ambiguous: %w", what, id, errdefs.ErrInvalidArgument)
			}
			found = o
		}
	}
	if n == 0 {
		return found, fmt.Errorf("%s %q: %w", what, id, errdefs.ErrNotFound)
	}
	return found, nil
}

// List returns copies of every pod, oldest first, but those still being
// created.
func (m *Manager) List() []*Pod {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Pod, 0, len(m.pods))
	for _, p := range m.pods {
		if p.State != Creating {
			out = append(out, copyPod(p))
		}
	}
	slices.SortFunc(out, func(a, b *Pod) int {
		if a.CreatedAt != b.CreatedAt {
			if a.CreatedAt < b.CreatedAt {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// restore finds every pod again after a (re)start. Assumptions: the pod
// records are as the daemon left them; pinned namespaces and /dev/shm
// mounts survive a daemon restart but not a reboot; the pod init may have
// died meanwhile; a teardown may have been interrupted.
//
//   - A pod still Creating is undone and forgotten: its RunPodSandbox never
//     answered, and kubelet retries it.
//   - A NotReady pod is torn down again: a stop may have been interrupted
//     (teardown can be repeated).
//   - A Ready pod whose namespaces are gone (a reboot) or whose init died is
//     torn down (CNI DEL from the cached result frees its IP) and NotReady.
//   - A directory without a record is what a crash right at the start of
//     RunPodSandbox leaves: it is removed.
//   - A record that cannot be read is reported and its pod left alone.
func (m *Manager) restore(ctx context.Context) error {
	entries, err := os.ReadDir(m.podsRoot())
	if err != nil {
		return err
	}
	for _, e := range entries {
		dir := filepath.Join(m.podsRoot(), e.Name())
		p, err := loadPod(dir)
		if errors.Is(err, fs.ErrNotExist) {
			klog.InfoS("Removing the directory of a pod sandbox that was never recorded", "id", e.Name())
			_ = os.RemoveAll(m.stateDir(e.Name()))
			_ = os.RemoveAll(dir)
			continue
		}
		if err != nil {
			klog.ErrorS(err, "Cannot read pod record; leaving it alone", "dir", dir)
			continue
		}
		switch p.State {
		case Creating:
			klog.InfoS("Undoing a pod sandbox whose creation was interrupted", "id", p.ID)
			network.WaitForPlugins(ctx, p.ID, 30*time.Second)
			if err := m.destroy(ctx, p); err != nil {
				klog.ErrorS(err, "Undoing interrupted pod sandbox", "id", p.ID)
				p.State = NotReady
				m.add(p)
				_ = m.update(p, nil)
			}
			continue
		case NotReady:
			m.stopContainersOf(ctx, p.ID)
			if err := m.teardown(ctx, p); err != nil {
				klog.ErrorS(err, "Finishing the stop of a pod sandbox", "id", p.ID)
			}
		case Ready:
			if reason := m.lost(p); reason != "" {
				klog.InfoS("Pod sandbox lost its namespaces; stopping it", "id", p.ID, "reason", reason)
				p.State = NotReady
				m.stopContainersOf(ctx, p.ID)
				if err := m.teardown(ctx, p); err != nil {
					klog.ErrorS(err, "Stopping pod sandbox", "id", p.ID)
				}
			}
		}
		m.add(p)
		if err := m.update(p, nil); err != nil {
			klog.ErrorS(err, "Saving pod sandbox", "id", p.ID)
		}
	}
	return nil
}

func (m *Manager) add(p *Pod) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pods[p.ID] = p
	m.names[p.key()] = p.ID
}

// lost says why a Ready pod can no longer run containers, or "".
func (m *Manager) lost(p *Pod) string {
	for t, path := range p.Namespaces {
		if !ns.IsPinned(path) {
			return fmt.Sprintf("%s namespace is gone", t)
		}
	}
	if p.Init != nil && !alive(p.Init) {
		return "the pod's init process died"
	}
	return ""
}

// emptyDir is the root of every pod init: empty, and not writable by it.
func (m *Manager) emptyDir() string { return filepath.Join(m.opts.State, "empty") }

// stopContainersOf stops a pod's containers at restore: no container runs
// in a pod that is not ready.
func (m *Manager) stopContainersOf(ctx context.Context, podID string) {
	for _, c := range m.containersOf(podID) {
		if err := m.StopContainer(ctx, c.ID, 0); err != nil {
			klog.ErrorS(err, "Stopping a container of a stopped pod", "id", c.ID)
		}
	}
}
