package sandbox

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/network/ns"
)

const usernsField = "linux.security_context.namespace_options.userns_options"

// nobody is the user the pod init runs as (podinit.c).
const nobody = 65534

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
	// The init of a shared PID namespace runs as nobody (65534).
	if opts.GetPid() == runtimeapi.NamespaceMode_POD && (uids[0].Size <= nobody || gids[0].Size <= nobody) {
		return nil, nil, fmt.Errorf("%s: a shared PID namespace needs the ids up to %d mapped, for its init: %w", usernsField, nobody, errdefs.ErrInvalidArgument)
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
	opts := p.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	return &podUserns{path: path, uids: specMappings(opts.GetUids()), gids: specMappings(opts.GetGids())}
}

func specMappings(ms []*runtimeapi.IDMapping) []specs.LinuxIDMapping {
	out := make([]specs.LinuxIDMapping, 0, len(ms))
	for _, m := range ms {
		out = append(out, specs.LinuxIDMapping{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetLength()})
	}
	return out
}

// chownToRoot gives path to the container's root (uid and gid 0 inside
// the user namespace): its root directory.
func (u *podUserns) chownToRoot(path string) error {
	return os.Lchown(path, int(u.uids[0].HostID), int(u.gids[0].HostID))
}

// shareWithRoot lets the container's root, as the runtime that sets the
// container up, read path (a directory: pass through) through its group,
// while the host's root keeps it: nothing the runtime touches is its to
// change.
func (u *podUserns) shareWithRoot(path string, mode os.FileMode) error {
	if err := os.Lchown(path, 0, int(u.gids[0].HostID)); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}

// idmappedBind mounts src at dst (which must exist) with its ids shifted
// as the user namespace usernsFD maps them: a file of the host's root is
// the container's root's. The kernel allows this only to the host's root,
// so the daemon makes these mounts, not the runtime in the container.
//
// With recursive, the mounts below src come along (a bind mount's "rbind"),
// but only src itself is id-mapped, as runc does without "ridmap": a
// submount whose filesystem cannot be id-mapped must not fail the volume.
func idmappedBind(src, dst string, usernsFD int, recursive bool) error {
	fd, err := idmappedTree(src, usernsFD, recursive)
	if err != nil {
		return err
	}
	defer func() { _ = unix.Close(fd) }()
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mounting the id-mapped %s: %w", src, err)
	}
	return nil
}

// idmappedTree is a detached copy of the mount at src (with the mounts
// below it when recursive), id-mapped by the user namespace usernsFD.
func idmappedTree(src string, usernsFD int, recursive bool) (int, error) {
	cloneFlags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if recursive {
		cloneFlags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, cloneFlags)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", src, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(usernsFD)}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		_ = unix.Close(fd)
		if errors.Is(err, unix.EINVAL) {
			// The filesystem cannot be id-mapped on this kernel (tmpfs
			// before 6.3, most network filesystems): the volume's
			// fault, not the daemon's.
			var st unix.Statfs_t
			_ = unix.Statfs(src, &st)
			return -1, fmt.Errorf("id-mapping %s: its filesystem (type %#x) cannot be id-mapped on this kernel: %w: %w", src, st.Type, err, errdefs.ErrFailedPrecondition)
		}
		return -1, fmt.Errorf("id-mapping %s: %w", src, err)
	}
	return fd, nil
}

// mountsForUserns makes, under the container's bundle, the mount each bind
// mount of the spec takes its files from, and points the spec at it. The
// runtime runs as the root of the pod's user namespace, which may not
// enter the host's directories of a volume, and cannot id-map one: the
// daemon does both. A mount that asked for the pod's mappings is id-mapped
// (and fails if its filesystem cannot be), except an image volume, an
// overlay whose layers are id-mapped already; any other is bound as it
// is, its files keeping the host's owners, as containerd does.
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
	if err := u.shareWithRoot(dir, 0o710); err != nil {
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
			var fd int
			fd, err = unix.Open(dst, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
			if err == nil {
				_ = unix.Close(fd)
			}
		}
		if err != nil {
			return err
		}
		imageVolume := strings.HasPrefix(mnt.Source, filepath.Join(bundle, "image-volume-"))
		if len(mnt.UIDMappings) > 0 && !imageVolume {
			err = idmappedBind(mnt.Source, dst, int(f.Fd()), true)
		} else {
			err = unix.Mount(mnt.Source, dst, "", unix.MS_BIND|unix.MS_REC, "")
		}
		if err != nil {
			return fmt.Errorf("mount %s: %w", mnt.Destination, err)
		}
		mnt.Source, mnt.UIDMappings, mnt.GIDMappings = dst, nil, nil
	}
	return nil
}

// UserNamespacesSupported tells whether pods may have user namespaces of
// their own here, and if not, why: the kernel must id-map mounts of the
// filesystems that hold the image layers and the pods' files.
func (m *Manager) UserNamespacesSupported(ctx context.Context, dirs ...string) error {
	probe := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 1 << 30, Size: 65536}}
	// The root of a pod's user namespace, a user of the host like any
	// other, must pass through the directories above husk's own.
	err := passable(m.opts.Root, m.opts.State)
	if err == nil {
		err = ns.WithUser(m.runtimeCommand(ctx, "hold"), probe, probe, func(fd int) error {
			for _, d := range append(dirs, m.opts.Root, m.opts.State) {
				tree, err := idmappedTree(d, fd, false)
				if err != nil {
					return fmt.Errorf("id-mapped mounts: %w", err)
				}
				_ = unix.Close(tree)
			}
			return nil
		})
	}
	m.mu.Lock()
	m.noUserns = err
	m.mu.Unlock()
	return err
}

// passable checks that every directory from / down to each of dirs lets
// other users pass (o+x).
func passable(dirs ...string) error {
	for _, d := range dirs {
		for p := d; ; p = filepath.Dir(p) {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			if fi.Mode().Perm()&0o001 == 0 {
				return fmt.Errorf("%s (mode %v) does not let other users pass, as the root of a pod's user namespace must", p, fi.Mode().Perm())
			}
			if p == "/" || p == "." {
				break
			}
		}
	}
	return nil
}
