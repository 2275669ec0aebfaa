package sandbox

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/network/ns"
)

const usernsField = "linux.security_context.namespace_options.userns_options"

// usernsMappings reads the user namespace a pod asks for (Kubernetes'
// hostUsers: false): nil mappings for the host's. Like containerd, husk
// takes one range each for uids and gids, starting at the container's 0:
// kubelet gives each pod 65536 ids of its own.
func usernsMappings(opts *runtimeapi.NamespaceOption) (uids, gids []syscall.SysProcIDMap, err error) {
	u := opts.GetUsernsOptions()
	if u == nil {
		// POD is the enum's zero value: only a message that is there
		// asks for a user namespace.
		return nil, nil, nil
	}
	switch u.GetMode() {
	case runtimeapi.NamespaceMode_NODE:
		if len(u.GetUids()) > 0 || len(u.GetGids()) > 0 {
			return nil, nil, fmt.Errorf("%s: mappings are for mode POD, not NODE: %w", usernsField, errdefs.ErrInvalidArgument)
		}
		return nil, nil, nil
	case runtimeapi.NamespaceMode_POD:
	default:
		return nil, nil, fmt.Errorf("%s.mode: %s is not a mode for a pod's user namespace (NODE or POD): %w", usernsField, u.GetMode(), errdefs.ErrInvalidArgument)
	}
	if opts.GetNetwork() == runtimeapi.NamespaceMode_NODE || opts.GetIpc() == runtimeapi.NamespaceMode_NODE || opts.GetPid() == runtimeapi.NamespaceMode_NODE {
		return nil, nil, fmt.Errorf("%s: a pod with its own user namespace cannot use the host's network, IPC or PID namespace: %w", usernsField, errdefs.ErrInvalidArgument)
	}
	if uids, err = idMappings(u.GetUids(), usernsField+".uids"); err != nil {
		return nil, nil, err
	}
	if gids, err = idMappings(u.GetGids(), usernsField+".gids"); err != nil {
		return nil, nil, err
	}
	return uids, gids, nil
}

func idMappings(ms []*runtimeapi.IDMapping, field string) ([]syscall.SysProcIDMap, error) {
	if len(ms) != 1 {
		return nil, fmt.Errorf("%s: exactly one mapping is supported, got %d: %w", field, len(ms), errdefs.ErrInvalidArgument)
	}
	m := ms[0]
	if m.GetContainerId() != 0 {
		return nil, fmt.Errorf("%s[0].container_id: the mapping must start at the container's 0 (its root), not %d: %w", field, m.GetContainerId(), errdefs.ErrInvalidArgument)
	}
	if m.GetLength() == 0 || uint64(m.GetHostId())+uint64(m.GetLength()) > math.MaxUint32 {
		return nil, fmt.Errorf("%s[0]: %d ids from host id %d do not fit in 32 bits: %w", field, m.GetLength(), m.GetHostId(), errdefs.ErrInvalidArgument)
	}
	if m.GetHostId() == 0 {
		return nil, fmt.Errorf("%s[0].host_id: the host's root cannot be the container's: %w", field, errdefs.ErrInvalidArgument)
	}
	return []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(m.GetHostId()), Size: int(m.GetLength())}}, nil
}

// privateDir creates the directory of one pod or container. Only root may
// enter it: it holds a root filesystem, image volumes or a pod's /dev/shm,
// with the setuid binaries and device nodes of images (Docker's
// CVE-2021-41091).
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// podUserns is a pod's own user namespace, as its containers use it.
type podUserns struct {
	path       string // the pinned namespace
	uids, gids []specs.LinuxIDMapping
}

// usernsOf returns the pod's own user namespace, or nil when the pod uses
// the host's.
func usernsOf(p *Pod) *podUserns {
	path, ok := p.Namespaces[ns.User]
	if !ok {
		return nil
	}
	u := &podUserns{path: path}
	opts := p.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	for _, m := range opts.GetUids() {
		u.uids = append(u.uids, specs.LinuxIDMapping{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetLength()})
	}
	for _, m := range opts.GetGids() {
		u.gids = append(u.gids, specs.LinuxIDMapping{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetLength()})
	}
	return u
}

// chownToRoot gives path to the container's root (uid and gid 0 inside
// the user namespace).
func (u *podUserns) chownToRoot(path string) error {
	return os.Lchown(path, int(u.uids[0].HostID), int(u.gids[0].HostID))
}

// idmappedBind mounts src at dst (which must exist) with its ids shifted
// as the user namespace usernsFD maps them: a file of the host's root is
// the container's root's. The kernel allows this only to the host's root,
// so the daemon makes these mounts, not the runtime in the container.
func idmappedBind(src, dst string, usernsFD int, recursive bool) error {
	cloneFlags, setFlags := uint(unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC), uint(unix.AT_EMPTY_PATH)
	if recursive {
		cloneFlags |= unix.AT_RECURSIVE
		setFlags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, cloneFlags)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", src, err)
	}
	defer func() { _ = unix.Close(fd) }()
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(usernsFD)}
	if err := unix.MountSetattr(fd, "", setFlags, &attr); err != nil {
		return fmt.Errorf("id-mapping %s: %w", src, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mounting the id-mapped %s: %w", src, err)
	}
	return nil
}

// mountOverlay mounts at dst an overlay of lowers (top first) and, when
// upper is set, of upper with its work dir. In a pod with its own user
// namespace (u set) the lowers are id-mapped first, each at a directory
// under scratch; the overlay keeps them after they are detached.
func mountOverlay(dst string, lowers []string, upper, work string, flags uintptr, u *podUserns, scratch string) (err error) {
	if u != nil {
		f, err := os.Open(u.path)
		if err != nil {
			return fmt.Errorf("opening the pod's user namespace: %w", err)
		}
		defer func() { _ = f.Close() }()
		mapped := make([]string, 0, len(lowers))
		defer func() {
			for _, d := range mapped {
				_ = unix.Unmount(d, unix.MNT_DETACH)
				_ = os.Remove(d)
			}
			_ = os.Remove(scratch)
		}()
		if err := os.MkdirAll(scratch, 0o700); err != nil {
			return err
		}
		for i, l := range lowers {
			d := filepath.Join(scratch, strconv.Itoa(i))
			if err := os.Mkdir(d, 0o700); err != nil {
				return err
			}
			if err := idmappedBind(l, d, int(f.Fd()), false); err != nil {
				_ = os.Remove(d)
				return err
			}
			mapped = append(mapped, d)
		}
		lowers = mapped
	}
	opts := "lowerdir=" + strings.Join(lowers, ":")
	if upper != "" {
		opts += ",upperdir=" + upper + ",workdir=" + work
	}
	return unix.Mount("overlay", dst, "overlay", flags, opts)
}

// mountsForUserns makes, under the container's bundle, the mount each bind
// mount of the spec takes its files from, and points the spec at it. The
// runtime runs as the root of the pod's user namespace, which may not
// enter the host's directories of a volume, and cannot id-map one: the
// daemon does both. A mount that asked for the pod's mappings fails if
// its filesystem cannot be id-mapped; the pod's own files (hosts,
// resolv.conf, /dev/shm) are id-mapped where the filesystem allows, and
// bound as they are elsewhere.
func (m *Manager) mountsForUserns(s *specs.Spec, bundle string, u *podUserns) error {
	f, err := os.Open(u.path)
	if err != nil {
		return fmt.Errorf("opening the pod's user namespace: %w", err)
	}
	defer func() { _ = f.Close() }()
	dir := filepath.Join(bundle, "mounts")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := u.chownToRoot(dir); err != nil {
		return err
	}
	for i := range s.Mounts {
		mnt := &s.Mounts[i]
		if mnt.Type != "bind" {
			continue
		}
		st, err := os.Stat(mnt.Source)
		if err != nil {
			return fmt.Errorf("mount %s: %w", mnt.Destination, err)
		}
		dst := filepath.Join(dir, strconv.Itoa(i))
		if st.IsDir() {
			err = os.Mkdir(dst, 0o700)
		} else {
			err = os.WriteFile(dst, nil, 0o600)
		}
		if err != nil {
			return err
		}
		wanted := len(mnt.UIDMappings) > 0
		err = idmappedBind(mnt.Source, dst, int(f.Fd()), true)
		if err != nil && !wanted {
			// An image volume (an overlay, whose layers are id-mapped
			// already) or a filesystem without id-mapped mounts.
			klog.V(2).InfoS("Binding without id-mapping", "source", mnt.Source, "err", err)
			err = unix.Mount(mnt.Source, dst, "", unix.MS_BIND|unix.MS_REC, "")
		}
		if err != nil {
			return fmt.Errorf("mount %s: %w", mnt.Destination, err)
		}
		mnt.Source, mnt.UIDMappings, mnt.GIDMappings = dst, nil, nil
	}
	return nil
}

// unmountUnder unmounts everything mounted at or below dir, deepest first.
func unmountUnder(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return err
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint) })
	for _, mi := range mounts {
		if err := unix.Unmount(mi.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmounting %s: %w", mi.Mountpoint, err)
		}
	}
	return nil
}

// UserNamespacesSupported tells whether pods may have user namespaces of
// their own here, and if not, why: the kernel must id-map mounts of the
// filesystems that hold the image layers and the pods' files.
func (m *Manager) UserNamespacesSupported(ctx context.Context, dirs ...string) error {
	probe := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 1 << 30, Size: 65536}}
	err := ns.WithUser(m.runtimeCommand(ctx, "hold"), probe, probe, func(fd int) error {
		for _, d := range append(dirs, m.opts.Root, m.opts.State) {
			tree, err := unix.OpenTree(unix.AT_FDCWD, d, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
			if err != nil {
				return fmt.Errorf("open_tree %s: %w", d, err)
			}
			attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(fd)}
			err = unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr)
			_ = unix.Close(tree)
			if err != nil {
				return fmt.Errorf("id-mapped mounts of %s: %w", d, err)
			}
		}
		return nil
	})
	m.mu.Lock()
	m.noUserns = err
	m.mu.Unlock()
	return err
}
