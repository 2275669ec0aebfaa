package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/go-digest"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/image"
	"github.com/husk-runtime/husk/oci/runtime/apparmor"
	"github.com/husk-runtime/husk/oci/runtime/engine"
	"github.com/husk-runtime/husk/oci/runtime/linux"
	"github.com/husk-runtime/husk/oci/runtime/spec"
)

func (m *Manager) containersRoot() string        { return filepath.Join(m.opts.Root, "containers") }
func (m *Manager) containersState() string       { return filepath.Join(m.opts.State, "containers") }
func (m *Manager) containerDir(id string) string { return filepath.Join(m.containersRoot(), id) }
func (m *Manager) bundleDir(id string) string    { return filepath.Join(m.containersState(), id) }
func (m *Manager) rootfsDir(id string) string    { return filepath.Join(m.bundleDir(id), "rootfs") }
func (m *Manager) upperDir(id string) string     { return filepath.Join(m.containerDir(id), "upper") }
func (m *Manager) workDir(id string) string      { return filepath.Join(m.containerDir(id), "work") }
func (m *Manager) emptyLayerDir() string         { return filepath.Join(m.opts.Root, "empty-layer") }

// updateContainer changes a container's fields under m.mu and saves its
// record; only the holder of the container's lock calls it.
func (m *Manager) updateContainer(c *Container, fn func(*Container)) error {
	return m.updateContainerThen(c, fn, nil)
}

// updateContainerThen is updateContainer, then, before any other update of
// the container, a call of then (which may take m.mu): the events of the
// changes are published in the order of the changes.
func (m *Manager) updateContainerThen(c *Container, fn func(*Container), then func()) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if then != nil {
		defer then()
	}
	m.mu.Lock()
	if fn != nil {
		fn(c)
	}
	b, err := c.encode()
	gone := c.gone
	m.mu.Unlock()
	if err != nil || gone {
		return err
	}
	if err := writeRecord(m.containerDir(c.ID), "container.json", b); err != nil {
		return fmt.Errorf("saving container %s: %w", c.ID, err)
	}
	return nil
}

// CreateContainer makes a container in a ready pod, as CreateContainer:
// its root filesystem (overlayfs of the image's layers and an upper dir of
// its own), its OCI spec and its cgroup. Nothing runs yet. A failure
// undoes every step.
func (m *Manager) CreateContainer(ctx context.Context, podID string, cfg *runtimeapi.ContainerConfig) (_ string, err error) {
	// cri/validate checked the config's shape. A pod still being made is
	// not there yet (as PodSandboxStatus says): its lock is held until
	// RunPodSandbox returns, NRI plugins' answers included.
	if err := m.checkNotCreating(podID); err != nil {
		return "", err
	}
	pod, unlockPod, err := m.lockExisting(podID)
	if err != nil {
		return "", err
	}
	if pod == nil {
		return "", fmt.Errorf("pod sandbox %q: %w", podID, errdefs.ErrNotFound)
	}
	defer unlockPod()
	rt, err := m.checkCreate(pod, cfg)
	if err != nil {
		return "", err
	}
	cfg, restoreSrc, err := m.fromCheckpoint(pod, cfg)
	if err != nil {
		return "", err
	}
	img, imgCfg, releaseLayers, err := m.containerImage(cfg.GetImage().GetImage())
	if err != nil {
		return "", err
	}
	defer releaseLayers()
	c, created, err := m.reserveContainer(pod, cfg, img)
	if err != nil {
		return "", err
	}
	defer created()
	st := newSteps(ctx, "CreateContainer", cfg.GetMetadata().GetName(), "id", c.ID)
	userns := usernsOf(pod)
	unlock := m.lockID(c.ID)
	defer unlock()
	c.Restore = m.restoreDir(c, restoreSrc)
	if err := m.recordContainer(c, userns, st); err != nil {
		m.forgetName(containerKey(pod.ID, cfg.GetMetadata()), c.ID)
		return "", err
	}
	defer func() {
		if err != nil {
			m.undoCreate(c, err)
			m.nriRemoved(c, pod)
		}
	}()
	if err := m.placeCheckpoint(c, restoreSrc, st); err != nil {
		return "", err
	}
	if err := m.mountRootfs(c, img.Layers, userns, st); err != nil {
		return "", err
	}
	vols, err := m.mountImageVolumes(c, cfg, userns, st)
	if err != nil {
		return "", err
	}
	s, err := m.containerSpec(ctx, c, pod, imgCfg, vols, userns, st)
	if err != nil {
		return "", err
	}
	if err := checkRestorable(c, s); err != nil {
		return "", err
	}
	sig, err := spec.ContainerStopSignal(cfg, imgCfg)
	if err != nil {
		return "", err
	}
	if err := m.installContainer(c, s, rt, userns, sig, st); err != nil {
		return "", err
	}
	m.emit(EventCreated, c.ID, pod.ID)
	if plugins := m.plugins(); plugins != nil {
		plugins.PostCreateContainer(ctx, m.nriPod(pod), m.nriContainer(copyContainer(c), s))
	}
	return c.ID, nil
}

// installContainer writes the container's spec, makes its cgroup and log
// directory, and records it created.
func (m *Manager) installContainer(c *Container, s *specs.Spec, rt engine.Runtime, userns *podUserns, sig syscall.Signal, st *steps) error {
	res, err := m.writeSpec(c.ID, s, rt, userns)
	if err := st.done("making and writing its OCI spec", err); err != nil {
		return err
	}
	if err := st.done("creating its cgroup", m.createCgroup(c, res)); err != nil {
		return err
	}
	if dir, rel := logLocation(c); dir != "" {
		if err := mkdirBeneath(dir, rel); err != nil {
			return st.done("creating the log directory", err)
		}
	}
	user := &User{UID: s.Process.User.UID, GID: s.Process.User.GID, Groups: s.Process.User.AdditionalGids}
	return st.done("recording it created", m.updateContainer(c, func(c *Container) {
		c.State, c.StopSig, c.User = ContainerCreated, int(sig), user
	}))
}

// createCgroup makes a new container's cgroup with its limits; the
// systemd driver makes it with the container's first process
// (StartContainer), and only checks the limits now.
func (m *Manager) createCgroup(c *Container, res *specs.LinuxResources) error {
	if m.opts.Cgroups.CreatedAtStart() {
		return m.opts.Cgroups.Check(res)
	}
	return m.opts.Cgroups.Create(c.Cgroup, res)
}

// containerImage is the image a container is made from and its config;
// its layers stay until release is called, whatever removes the image.
func (m *Manager) containerImage(ref string) (_ image.Image, _ imagespec.ImageConfig, release func(), err error) {
	img, err := m.opts.Images.Get(ref)
	if err != nil {
		return image.Image{}, imagespec.ImageConfig{}, nil, fmt.Errorf("config.image.image: %w", err)
	}
	release = m.opts.Images.LeaseLayers(img.Layers)
	cfg, _, err := m.opts.Images.Config(img.ID)
	if err != nil {
		release()
		return image.Image{}, imagespec.ImageConfig{}, nil, err
	}
	return img, cfg.Config, release, nil
}

// checkCreate refuses a container the pod cannot have now, and names the
// runtime that will run it.
func (m *Manager) checkCreate(pod *Pod, cfg *runtimeapi.ContainerConfig) (engine.Runtime, error) {
	if !pod.Ready() {
		return nil, fmt.Errorf("pod sandbox %s is not ready: %w", pod.ID, errdefs.ErrFailedPrecondition)
	}
	rt, err := m.configuredRuntime(pod)
	if err != nil {
		return nil, err
	}
	if !rt.Features().RecursiveReadOnlyMounts {
		for i, mnt := range cfg.GetMounts() {
			if mnt.GetRecursiveReadOnly() {
				return nil, fmt.Errorf("config.mounts[%d].recursive_read_only: runtime handler %q does not offer it: %w", i, pod.RuntimeHandler, errdefs.ErrInvalidArgument)
			}
		}
	}
	return rt, nil
}

// reserveContainer gives a new container its id and its name in the pod,
// and counts it in the list budget until created is called (twice once
// the container is listed: the budget errs on the safe side). The name is
// the caller's to forget should it fail before the container is recorded.
func (m *Manager) reserveContainer(pod *Pod, cfg *runtimeapi.ContainerConfig, img image.Image) (_ *Container, created func(), err error) {
	md := cfg.GetMetadata()
	key := containerKey(pod.ID, md)
	id := newID()
	m.mu.Lock()
	if other, ok := m.cnames[key]; ok {
		m.mu.Unlock()
		return nil, nil, fmt.Errorf("container %s in pod %s already exists as %s: %w", md.GetName(), pod.ID, other, errdefs.ErrAlreadyExists)
	}
	size := containerListSize(cfg)
	if err := m.checkBudgetLocked(size); err != nil {
		m.mu.Unlock()
		return nil, nil, err
	}
	m.cnames[key] = id
	m.creating += size
	m.mu.Unlock()
	created = func() {
		m.mu.Lock()
		m.creating -= size
		m.mu.Unlock()
	}
	cgroup, err := m.opts.Cgroups.ContainerPath(pod.CgroupPath, id)
	if err != nil {
		created()
		m.forgetName(key, id)
		return nil, nil, err
	}
	c := &Container{
		ID: id, PodID: pod.ID, Config: cfg, ImageID: img.ID, Layers: img.Layers,
		State: ContainerCreating, CreatedAt: time.Now().UnixNano(), Cgroup: cgroup,
		// Recorded with the rest, before it is mounted: undoing an
		// unmounted one is no error, and each record written costs
		// (an inode made and one deleted).
		Rootfs: m.rootfsDir(id),
	}
	if dir, p := pod.Config.GetLogDirectory(), cfg.GetLogPath(); dir != "" && p != "" {
		c.LogDir, c.LogPath = dir, filepath.Join(dir, p)
	}
	return c, created, nil
}

// recordContainer makes a new container's directories and writes its
// first record: from here on, a failure or a crash is undone from it.
func (m *Manager) recordContainer(c *Container, userns *podUserns, st *steps) error {
	undo := func() {
		_ = os.RemoveAll(m.containerDir(c.ID))
		_ = removeTree(m.bundleDir(c.ID)) // nothing is mounted there yet
	}
	for _, d := range []string{m.containerDir(c.ID), m.bundleDir(c.ID)} {
		if err := privateDir(d); err != nil {
			undo()
			return st.done("creating its directories", err)
		}
	}
	// In a pod with its own user namespace, the runtime sets the container
	// up as that namespace's root: it may pass through the bundle.
	if userns != nil {
		if err := userns.shareWithRoot(m.bundleDir(c.ID), 0o710); err != nil {
			undo()
			return st.done("creating its directories", err)
		}
	}
	if err := m.updateContainer(c, nil); err != nil {
		undo()
		return st.done("recording it", err)
	}
	_ = st.done("recording it", nil)
	m.mu.Lock()
	m.containers[c.ID] = c
	m.mu.Unlock()
	return nil
}

// undoCreate destroys what a failed CreateContainer made. Should that fail
// too, the container stays, exited, for RemoveContainer to finish.
func (m *Manager) undoCreate(c *Container, cause error) {
	if err := m.destroyContainer(c); err != nil {
		klog.ErrorS(err, "Undoing a failed CreateContainer", "id", c.ID)
		_ = m.updateContainer(c, func(c *Container) {
			c.State = ContainerExited
			c.Exit = &Exit{Code: 128, Reason: "CreateError", Message: cause.Error()}
		})
		return
	}
	m.forgetContainer(c)
}

// mountRootfs mounts the container's root filesystem: the image's layers,
// top first, under an upper dir of the container's.
func (m *Manager) mountRootfs(c *Container, layers []digest.Digest, userns *podUserns, st *steps) error {
	for _, d := range []string{m.upperDir(c.ID), m.workDir(c.ID), m.rootfsDir(c.ID)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return st.done("creating the root filesystem", err)
		}
	}
	lowers := m.lowerDirs(layers)
	if len(lowers) == 0 {
		if err := os.MkdirAll(m.emptyLayerDir(), 0o755); err != nil {
			return err
		}
		lowers = []string{m.emptyLayerDir()}
	}
	if c.Restore != "" {
		if err := m.applyRootfsDiff(c); err != nil {
			return st.done("applying the checkpoint's writable layer", err)
		}
	}
	if userns != nil {
		// The root directory of the container is its root's.
		if err := userns.chownToRoot(m.upperDir(c.ID)); err != nil {
			return st.done("creating the root filesystem", err)
		}
	}
	err := mountOverlay(m.rootfsDir(c.ID), lowers, m.upperDir(c.ID), m.workDir(c.ID), 0, userns, filepath.Join(m.bundleDir(c.ID), "l"))
	return st.done("mounting the root filesystem (overlayfs)", err)
}

// containerSpec is the container's OCI spec, for husk's own runtime; with
// the pod's user namespace, its volumes are mounted where that namespace's
// root can reach them.
func (m *Manager) containerSpec(ctx context.Context, c *Container, pod *Pod, img imagespec.ImageConfig, vols map[int]string, userns *podUserns, st *steps) (*specs.Spec, error) {
	cfg := c.Config
	in := spec.Input{
		ID:             c.ID,
		Config:         cfg,
		Pod:            pod.Config,
		Image:          img,
		RootfsPath:     m.rootfsDir(c.ID),
		HostnamePath:   m.FilePath(pod.ID, HostnameFile),
		HostsPath:      m.FilePath(pod.ID, HostsFile),
		ResolvConfPath: m.FilePath(pod.ID, ResolvFile),
		ShmPath:        pod.Shm,
		Namespaces:     map[string]string{},
		CgroupsPath:    c.Cgroup,
		// On cgroup v2 a container sees only its own cgroup, as with
		// containerd; v1 has the bind mounts of the runtime instead.
		CgroupNamespace: m.opts.Cgroups.Unified(),
		ImageVolumes:    vols,
		AppArmor:        m.opts.AppArmor,
	}
	if userns != nil {
		in.UserNamespace, in.UIDMappings, in.GIDMappings = userns.path, userns.uids, userns.gids
	}
	for t, key := range specNamespaces {
		if p, ok := pod.Namespaces[t]; ok {
			in.Namespaces[key] = p
		}
	}
	if nsOpts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(); nsOpts.GetPid() == runtimeapi.NamespaceMode_TARGET {
		// A debug container joins the PID namespace of the container it
		// targets (kubectl debug --target), which must run.
		pid, err := m.ContainerPID(nsOpts.GetTargetId())
		if err != nil {
			return nil, fmt.Errorf("linux.security_context.namespace_options.target_id: %w", err)
		}
		in.Namespaces["pid"] = fmt.Sprintf("/proc/%d/ns/pid", pid)
	}
	s, err := spec.Generate(in)
	if err != nil {
		return nil, err
	}
	if err := m.injectCDI(s, cfg); err != nil {
		return nil, err
	}
	if err := st.done("asking NRI plugins (CreateContainer)", m.nriCreate(ctx, c, pod, s)); err != nil {
		return nil, err
	}
	if p := s.Process.ApparmorProfile; p != "" {
		if err := apparmor.Ensure(p); err != nil {
			return nil, fmt.Errorf("linux.security_context.apparmor: %w", err)
		}
	}
	s.Root.Path = m.rootfsDir(c.ID)
	if s.Process.OOMScoreAdj != nil {
		adj := clampOOMScoreAdj(*s.Process.OOMScoreAdj)
		s.Process.OOMScoreAdj = &adj
	}
	if userns != nil {
		if err := st.done("mounting volumes for the user namespace", m.mountsForUserns(s, m.bundleDir(c.ID), userns)); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// specNamespaces are the spec's names of the pod's namespaces a container
// joins by path.
var specNamespaces = map[ns.Type]string{ns.Net: "network", ns.IPC: "ipc", ns.UTS: "uts", ns.PID: "pid"}

// writeSpec writes a container's spec to its bundle as its runtime runs
// it, readable by the root of the pod's user namespace if it has one, and
// returns the limits of husk's cgroup of the container.
func (m *Manager) writeSpec(id string, s *specs.Spec, rt engine.Runtime, userns *podUserns) (*specs.LinuxResources, error) {
	outer := rt.OuterLimits(s.Linux.Resources)
	if err := rt.PrepareSpec(s); err != nil {
		return nil, err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	specPath := filepath.Join(m.bundleDir(id), "config.json")
	if err := os.WriteFile(specPath, b, 0o600); err != nil {
		return nil, err
	}
	if userns != nil {
		if err := userns.shareWithRoot(specPath, 0o640); err != nil {
			return nil, err
		}
	}
	// Without a profile (a spec it cannot hold), exec goes through
	// exec-init.
	if profile, err := linux.ExecProfile(s); err == nil {
		if err := os.WriteFile(m.execProfilePath(id), profile, 0o600); err != nil {
			return nil, err
		}
		// container-init loads its seccomp program from it.
		if userns != nil {
			if err := userns.shareWithRoot(m.execProfilePath(id), 0o640); err != nil {
				return nil, err
			}
		}
	} else {
		klog.V(4).InfoS("No exec profile: exec-init makes exec's processes", "id", id, "why", err)
	}
	return outer, nil
}

// execProfilePath is the container's exec profile (linux.ExecProfile),
// which exec-enter reads so that an exec needs no exec-init.
func (m *Manager) execProfilePath(id string) string {
	return filepath.Join(m.bundleDir(id), linux.ExecProfileName)
}

// clampOOMScoreAdj keeps a container's oom_score_adj in the kernel's range
// and at or above the daemon's own: without CAP_SYS_RESOURCE it cannot be
// lowered below it, and a container must not fail for that (containerd's
// restrict_oom_score_adj).
func clampOOMScoreAdj(want int) int {
	want = max(-1000, min(1000, want))
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return want
	}
	own, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || want >= own {
		return want
	}
	return own
}

func (m *Manager) forgetName(key, id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cnames[key] == id {
		delete(m.cnames, key)
	}
}

func (m *Manager) forgetContainer(c *Container) {
	if m.monitors != nil {
		m.monitors.Remove(c.ID)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.containers, c.ID)
	if key := containerKey(c.PodID, c.Config.GetMetadata()); m.cnames[key] == c.ID {
		delete(m.cnames, key)
	}
	delete(m.locks, c.ID)
	m.forgetSampled(c.ID)
}

// mountImageVolumes mounts each image the config mounts (Mount.image, the
// image volumes of KEP 4639) read-only under the container's bundle, each
// recorded first, and returns the host paths to bind, by mount index, with
// image_sub_path resolved inside the image.
func (m *Manager) mountImageVolumes(c *Container, cfg *runtimeapi.ContainerConfig, userns *podUserns, st *steps) (map[int]string, error) {
	vols := map[int]string{}
	for i, mnt := range cfg.GetMounts() {
		ref := mnt.GetImage().GetImage()
		if ref == "" {
			continue
		}
		field := fmt.Sprintf("config.mounts[%d]", i)
		if err := spec.CheckImageVolume(mnt, field); err != nil {
			return nil, err
		}
		img, err := m.opts.Images.Get(ref)
		if err != nil {
			return nil, fmt.Errorf("%s.image: %w", field, err)
		}
		dir := filepath.Join(m.bundleDir(c.ID), fmt.Sprintf("image-volume-%d", i))
		vol := ImageVolume{Mount: i, Path: dir, ImageID: img.ID, Layers: img.Layers}
		if err := m.updateContainer(c, func(c *Container) { c.ImageVolumes = append(c.ImageVolumes, vol) }); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, st.done("creating an image volume", err)
		}
		// The empty layer at the bottom: overlayfs wants two lower
		// layers when it has no upper one.
		if err := os.MkdirAll(m.emptyLayerDir(), 0o755); err != nil {
			return nil, err
		}
		lowers := append(m.lowerDirs(img.Layers), m.emptyLayerDir())
		err = mountOverlay(dir, lowers, "", "", unix.MS_RDONLY, userns, dir+"-l")
		if err := st.done("mounting an image volume", err); err != nil {
			return nil, err
		}
		src := dir
		if sub := mnt.GetImageSubPath(); sub != "" {
			// Inside the image, whatever its symlinks say; the image is
			// read-only, so what is checked here stays so.
			p, err := securejoin.SecureJoin(dir, sub)
			if err != nil {
				return nil, fmt.Errorf("%s.image_sub_path: %w", field, err)
			}
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("%s.image_sub_path: %q does not exist in image %s: %w", field, sub, ref, errdefs.ErrInvalidArgument)
			}
			src = p
		}
		vols[i] = src
	}
	return vols, nil
}

// lowerDirs are the directories of an image's layers as overlayfs's
// lowerdir lists them: the top layer first.
func (m *Manager) lowerDirs(layers []digest.Digest) []string {
	dirs := make([]string, 0, len(layers)+1)
	for i := len(layers) - 1; i >= 0; i-- {
		dirs = append(dirs, m.opts.Images.LayerPath(layers[i]))
	}
	return dirs
}
