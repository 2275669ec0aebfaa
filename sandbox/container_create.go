package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/runtime/apparmor"
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
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
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
	// cri/validate checked the config's shape.
	md := cfg.GetMetadata()
	pod, unlockPod, err := m.lockExisting(podID)
	if err != nil {
		return "", err
	}
	if pod == nil {
		return "", fmt.Errorf("pod sandbox %q: %w", podID, errdefs.ErrNotFound)
	}
	defer unlockPod()
	if !pod.Ready() {
		return "", fmt.Errorf("pod sandbox %s is not ready: %w", pod.ID, errdefs.ErrFailedPrecondition)
	}
	rt, err := m.configuredRuntime(pod)
	if err != nil {
		return "", err
	}
	if !rt.Features().RecursiveReadOnlyMounts {
		for i, mnt := range cfg.GetMounts() {
			if mnt.GetRecursiveReadOnly() {
				return "", fmt.Errorf("config.mounts[%d].recursive_read_only: runtime handler %q does not offer it: %w", i, pod.RuntimeHandler, errdefs.ErrInvalidArgument)
			}
		}
	}
	img, err := m.opts.Images.Get(cfg.GetImage().GetImage())
	if err != nil {
		return "", fmt.Errorf("config.image.image: %w", err)
	}
	releaseLayers := m.opts.Images.LeaseLayers(img.Layers)
	defer releaseLayers()
	imgCfg, _, err := m.opts.Images.Config(img.ID)
	if err != nil {
		return "", err
	}

	key := containerKey(pod.ID, md)
	id := newID()
	m.mu.Lock()
	if other, ok := m.cnames[key]; ok {
		m.mu.Unlock()
		return "", fmt.Errorf("container %s in pod %s already exists as %s: %w", md.GetName(), pod.ID, other, errdefs.ErrAlreadyExists)
	}
	size := containerListSize(cfg)
	if err := m.checkBudgetLocked(size); err != nil {
		m.mu.Unlock()
		return "", err
	}
	m.cnames[key] = id
	// Counted until CreateContainer returns (twice once the container is
	// listed: the budget errs on the safe side).
	m.creating += size
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.creating -= size
		m.mu.Unlock()
	}()
	cgroup, err := m.opts.Cgroups.ContainerPath(pod.CgroupPath, id)
	if err != nil {
		m.forgetName(key, id)
		return "", err
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
	// step names a failed step in the error, and logs how long each took.
	last := time.Now()
	step := func(name string, err error) error {
		if err == nil {
			klog.V(4).InfoS("CreateContainer step done", "id", id, "step", name, "took", time.Since(last))
			last = time.Now()
			return nil
		}
		return fmt.Errorf("CreateContainer %s: %s: %w", md.GetName(), name, err)
	}
	for _, d := range []string{m.containerDir(id), m.bundleDir(id)} {
		if err := privateDir(d); err != nil {
			m.forgetName(key, id)
			return "", step("creating its directories", err)
		}
	}
	// In a pod with its own user namespace, the runtime sets the container
	// up as that namespace's root: it may pass through the bundle.
	userns := usernsOf(pod)
	if userns != nil {
		if err := userns.shareWithRoot(m.bundleDir(id), 0o710); err != nil {
			m.forgetName(key, id)
			return "", step("creating its directories", err)
		}
	}
	unlock := m.lockID(id)
	defer unlock()
	if err := m.updateContainer(c, nil); err != nil {
		m.forgetName(key, id)
		_ = os.RemoveAll(m.containerDir(id))
		_ = removeTree(m.bundleDir(id)) // nothing is mounted there yet
		return "", step("recording it", err)
	}
	_ = step("recording it", nil)
	m.mu.Lock()
	m.containers[id] = c
	m.mu.Unlock()
	defer func() {
		if err != nil {
			if derr := m.destroyContainer(c); derr != nil {
				klog.ErrorS(derr, "Undoing a failed CreateContainer", "id", id)
				_ = m.updateContainer(c, func(c *Container) {
					c.State = ContainerExited
					c.Exit = &Exit{Code: 128, Reason: "CreateError", Message: err.Error()}
				})
				return
			}
			m.forgetContainer(c)
		}
	}()

	// The root filesystem: the image's layers, top first, under an upper
	// dir of the container's.
	for _, d := range []string{m.upperDir(id), m.workDir(id), m.rootfsDir(id)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", step("creating the root filesystem", err)
		}
	}
	lowers := m.lowerDirs(img.Layers)
	if len(lowers) == 0 {
		if err := os.MkdirAll(m.emptyLayerDir(), 0o755); err != nil {
			return "", err
		}
		lowers = []string{m.emptyLayerDir()}
	}
	if userns != nil {
		// The root directory of the container is its root's.
		if err := userns.chownToRoot(m.upperDir(id)); err != nil {
			return "", step("creating the root filesystem", err)
		}
	}
	err = mountOverlay(m.rootfsDir(id), lowers, m.upperDir(id), m.workDir(id), 0, userns, filepath.Join(m.bundleDir(id), "l"))
	if err := step("mounting the root filesystem (overlayfs)", err); err != nil {
		return "", err
	}

	vols, err := m.mountImageVolumes(c, cfg, userns, step)
	if err != nil {
		return "", err
	}

	in := spec.Input{
		ID:             id,
		Config:         cfg,
		Pod:            pod.Config,
		Image:          imgCfg.Config,
		RootfsPath:     m.rootfsDir(id),
		HostnamePath:   m.FilePath(pod.ID, HostnameFile),
		HostsPath:      m.FilePath(pod.ID, HostsFile),
		ResolvConfPath: m.FilePath(pod.ID, ResolvFile),
		ShmPath:        pod.Shm,
		Namespaces:     map[string]string{},
		CgroupsPath:    cgroup,
		// On cgroup v2 a container sees only its own cgroup, as with
		// containerd; v1 has the bind mounts of the runtime instead.
		CgroupNamespace: m.opts.Cgroups.Unified(),
		ImageVolumes:    vols,
		AppArmor:        m.opts.AppArmor,
	}
	if userns != nil {
		in.UserNamespace, in.UIDMappings, in.GIDMappings = userns.path, userns.uids, userns.gids
	}
	for t, key := range map[ns.Type]string{ns.Net: "network", ns.IPC: "ipc", ns.UTS: "uts", ns.PID: "pid"} {
		if p, ok := pod.Namespaces[t]; ok {
			in.Namespaces[key] = p
		}
	}
	if nsOpts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(); nsOpts.GetPid() == runtimeapi.NamespaceMode_TARGET {
		// A debug container joins the PID namespace of the container it
		// targets (kubectl debug --target), which must run.
		pid, err := m.ContainerPID(nsOpts.GetTargetId())
		if err != nil {
			return "", fmt.Errorf("linux.security_context.namespace_options.target_id: %w", err)
		}
		in.Namespaces["pid"] = fmt.Sprintf("/proc/%d/ns/pid", pid)
	}
	s, err := spec.Generate(in)
	if err != nil {
		return "", err
	}
	if p := s.Process.ApparmorProfile; p != "" {
		if err := apparmor.Ensure(p); err != nil {
			return "", fmt.Errorf("linux.security_context.apparmor: %w", err)
		}
	}
	s.Root.Path = m.rootfsDir(id)
	if s.Process.OOMScoreAdj != nil {
		adj := clampOOMScoreAdj(*s.Process.OOMScoreAdj)
		s.Process.OOMScoreAdj = &adj
	}
	sig, err := spec.ContainerStopSignal(cfg, imgCfg.Config)
	if err != nil {
		return "", err
	}
	if userns != nil {
		if err := step("mounting volumes for the user namespace", m.mountsForUserns(s, m.bundleDir(id), userns)); err != nil {
			return "", err
		}
	}
	res := rt.OuterLimits(s.Linux.Resources) // the container's cgroup's
	if err := rt.PrepareSpec(s); err != nil {
		return "", err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	specPath := filepath.Join(m.bundleDir(id), "config.json")
	err = os.WriteFile(specPath, b, 0o600)
	if err == nil && userns != nil {
		err = userns.shareWithRoot(specPath, 0o640)
	}
	if err := step("making and writing its OCI spec", err); err != nil {
		return "", err
	}
	if m.opts.Cgroups.CreatedAtStart() {
		// The systemd driver makes it with the container's first process
		// (StartContainer).
		err = m.opts.Cgroups.Check(res)
	} else {
		err = m.opts.Cgroups.Create(cgroup, res)
	}
	if err := step("creating its cgroup", err); err != nil {
		return "", err
	}
	if dir, rel := logLocation(c); dir != "" {
		if err := mkdirBeneath(dir, rel); err != nil {
			return "", step("creating the log directory", err)
		}
	}
	user := &User{UID: s.Process.User.UID, GID: s.Process.User.GID, Groups: s.Process.User.AdditionalGids}
	if err := step("recording it created", m.updateContainer(c, func(c *Container) {
		c.State, c.StopSig, c.User = ContainerCreated, int(sig), user
	})); err != nil {
		return "", err
	}
	return id, nil
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
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.containers, c.ID)
	if key := containerKey(c.PodID, c.Config.GetMetadata()); m.cnames[key] == c.ID {
		delete(m.cnames, key)
	}
	delete(m.locks, c.ID)
}

// mountImageVolumes mounts each image the config mounts (Mount.image, the
// image volumes of KEP 4639) read-only under the container's bundle, each
// recorded first, and returns the host paths to bind, by mount index, with
// image_sub_path resolved inside the image.
func (m *Manager) mountImageVolumes(c *Container, cfg *runtimeapi.ContainerConfig, userns *podUserns, step func(string, error) error) (map[int]string, error) {
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
			return nil, step("creating an image volume", err)
		}
		// The empty layer at the bottom: overlayfs wants two lower
		// layers when it has no upper one.
		if err := os.MkdirAll(m.emptyLayerDir(), 0o755); err != nil {
			return nil, err
		}
		lowers := append(m.lowerDirs(img.Layers), m.emptyLayerDir())
		err = mountOverlay(dir, lowers, "", "", unix.MS_RDONLY, userns, dir+"-l")
		if err := step("mounting an image volume", err); err != nil {
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
