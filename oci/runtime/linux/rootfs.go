package linux

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// mountFlags are the mount options that are flags rather than data.
var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"noatime": {false, unix.MS_NOATIME}, "atime": {true, unix.MS_NOATIME},
	"strictatime": {false, unix.MS_STRICTATIME}, "relatime": {false, unix.MS_RELATIME},
	"nodiratime": {false, unix.MS_NODIRATIME}, "sync": {false, unix.MS_SYNCHRONOUS},
	"bind": {false, unix.MS_BIND}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
}

var propagationFlags = map[string]uintptr{
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC,
	"shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

func parseMountOptions(opts []string) (flags uintptr, propagation []uintptr, data string) {
	var rest []string
	for _, o := range opts {
		if o == "rro" {
			continue // applied after the mount (recursiveReadOnly)
		}
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
		} else if p, ok := propagationFlags[o]; ok {
			propagation = append(propagation, p)
		} else {
			rest = append(rest, o)
		}
	}
	return flags, propagation, strings.Join(rest, ",")
}

// setupRootfs builds the container's filesystem in the new mount
// namespace and pivots into it. Every mount destination is resolved
// inside the rootfs through a file handle (filepath-securejoin's
// pathrs-lite): a symlink in the image cannot send a mount onto the host,
// even if the image changes it meanwhile.
func setupRootfs(spec *specs.Spec, rootfs string) error {
	// Nothing mounted here may reach the host, but what the host mounts
	// may reach in (rslave volumes); unless a Bidirectional volume asks
	// for mounts to go both ways (rshared).
	propagation := uintptr(unix.MS_SLAVE | unix.MS_REC)
	if spec.Linux.RootfsPropagation == "rshared" || spec.Linux.RootfsPropagation == "shared" {
		propagation = unix.MS_SHARED | unix.MS_REC
	}
	if err := unix.Mount("", "/", "", propagation, ""); err != nil {
		return fmt.Errorf("setting the propagation of /: %w", err)
	}
	// pivot_root refuses a root that shares propagation with anything, and
	// what is mounted under the rootfs must not show on the host: the
	// rootfs's own mount is private (volumes keep theirs).
	if err := unix.Mount("", rootfs, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making the rootfs private: %w", err)
	}
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting the rootfs: %w", err)
	}
	root, err := os.OpenFile(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer func() { _ = root.Close() }()
	for _, m := range spec.Mounts {
		if m.Type == "cgroup" || m.Type == "cgroup2" {
			if err := mountCgroups(root, m, spec.Linux.CgroupsPath); err != nil {
				return fmt.Errorf("mounting the cgroup filesystem on %s: %w", m.Destination, err)
			}
			continue
		}
		if err := mountOne(root, m); err != nil {
			return fmt.Errorf("mounting %s on %s: %w", m.Source, m.Destination, err)
		}
	}
	if err := makeDevices(root, spec.Linux.Devices); err != nil {
		return err
	}
	if err := pivotRoot(rootfs); err != nil {
		return err
	}
	for _, p := range spec.Linux.MaskedPaths {
		if err := maskPath(p); err != nil {
			return fmt.Errorf("masking %s: %w", p, err)
		}
	}
	for _, p := range spec.Linux.ReadonlyPaths {
		if err := readonlyPath(p); err != nil {
			return fmt.Errorf("making %s read-only: %w", p, err)
		}
	}
	if spec.Root.Readonly {
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|lockedFlags("/"), ""); err != nil {
			return fmt.Errorf("making the rootfs read-only: %w", err)
		}
	}
	return nil
}

// underProc tells whether dest is in /proc, where a mount could hide or
// replace what the kernel says about the container's processes (runc's
// checkProcMount; CVE-2019-16884, CVE-2025-52881).
func underProc(dest string) bool {
	dest = filepath.Clean("/" + dest)
	return dest == "/proc" || strings.HasPrefix(dest, "/proc/")
}

func mountOne(root *os.File, m specs.Mount) error {
	if underProc(m.Destination) && m.Type != "proc" {
		return fmt.Errorf("a %s mount may not go into /proc", m.Type)
	}
	flags, propagation, data := parseMountOptions(m.Options)
	isBind := flags&unix.MS_BIND != 0
	typ := m.Type
	if isBind {
		typ = ""
	}
	// A bind mount of a file needs a file to mount onto.
	wantDir := true
	if isBind {
		fi, err := os.Stat(m.Source)
		if err != nil {
			return err
		}
		wantDir = fi.IsDir()
	}
	target, err := destination(root, m.Destination, wantDir)
	if err != nil {
		return err
	}
	defer func() { _ = target.Close() }()
	at := fmt.Sprintf("/proc/self/fd/%d", target.Fd())
	if err := unix.Mount(m.Source, at, typ, flags&^unix.MS_RDONLY|flagsIfNotBind(flags, isBind), data); err != nil {
		return err
	}
	// A bind mount takes most flags only on a remount; the handle is
	// stale after the mount, so the remount goes through the path of the
	// new mount, found again inside the root.
	if isBind && flags&(unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC) != 0 {
		again, err := pathrs.OpenatInRoot(root, m.Destination)
		if err != nil {
			return err
		}
		defer func() { _ = again.Close() }()
		// Flags the source has (a nodev tmpfs) are locked in a user
		// namespace: a remount must keep them.
		at := fmt.Sprintf("/proc/self/fd/%d", again.Fd())
		remount := unix.MS_REMOUNT | unix.MS_BIND | flags&(unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC) | lockedFlags(at)
		if err := unix.Mount("", at, "", remount, ""); err != nil {
			return fmt.Errorf("remounting: %w", err)
		}
	}
	if slices.Contains(m.Options, "rro") {
		// Read-only all the way down, submounts included: a plain "ro"
		// bind leaves them writable.
		again, err := pathrs.OpenatInRoot(root, m.Destination)
		if err != nil {
			return err
		}
		err = unix.MountSetattr(int(again.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
		_ = again.Close()
		if err != nil {
			return fmt.Errorf("making it recursively read-only: %w", err)
		}
	}
	for _, p := range propagation {
		again, err := pathrs.OpenatInRoot(root, m.Destination)
		if err != nil {
			return err
		}
		err = unix.Mount("", fmt.Sprintf("/proc/self/fd/%d", again.Fd()), "", p, "")
		_ = again.Close()
		if err != nil {
			return fmt.Errorf("setting propagation: %w", err)
		}
	}
	return nil
}

func flagsIfNotBind(flags uintptr, isBind bool) uintptr {
	if isBind {
		return 0
	}
	return flags & unix.MS_RDONLY
}

// destination opens (creating it if needed) the mount point inside root.
func destination(root *os.File, dest string, dir bool) (*os.File, error) {
	if dir {
		return pathrs.MkdirAllHandle(root, dest, 0o755)
	}
	parent, err := pathrs.MkdirAllHandle(root, filepath.Dir(dest), 0o755)
	if err != nil {
		return nil, err
	}
	defer func() { _ = parent.Close() }()
	name := filepath.Base(dest)
	fd, err := unix.Openat(int(parent.Fd()), name, unix.O_CREAT|unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EISDIR) {
		// Something else is there (a symlink, a directory): resolve it in
		// the root and mount onto whatever it is.
		return pathrs.OpenatInRoot(root, dest)
	}
	if err != nil {
		return nil, err
	}
	_ = unix.Close(fd)
	return pathrs.OpenatInRoot(root, dest)
}

func makeDevices(root *os.File, devices []specs.LinuxDevice) error {
	for _, d := range devices {
		parent, err := pathrs.MkdirAllHandle(root, filepath.Dir(d.Path), 0o755)
		if err != nil {
			return fmt.Errorf("device %s: %w", d.Path, err)
		}
		mode := uint32(0o666)
		if d.FileMode != nil {
			mode = uint32(*d.FileMode) & 0o7777
		}
		switch d.Type {
		case "c", "u":
			mode |= unix.S_IFCHR
		case "b":
			mode |= unix.S_IFBLK
		case "p":
			mode |= unix.S_IFIFO
		default:
			_ = parent.Close()
			return fmt.Errorf("device %s: unknown type %q", d.Path, d.Type)
		}
		name := filepath.Base(d.Path)
		_ = unix.Unlinkat(int(parent.Fd()), name, 0)
		err = unix.Mknodat(int(parent.Fd()), name, mode, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor))))
		if errors.Is(err, unix.EPERM) && inUserNamespace() {
			// The root of a user namespace may not make device nodes:
			// the host's own node is bound instead (runc does the same),
			// and keeps the host's owner and mode.
			err = bindHostDevice(parent, name, d)
			_ = parent.Close()
			if err != nil {
				return fmt.Errorf("device %s: %w", d.Path, err)
			}
			continue
		}
		if err == nil {
			uid, gid := 0, 0
			if d.UID != nil {
				uid = int(*d.UID)
			}
			if d.GID != nil {
				gid = int(*d.GID)
			}
			err = unix.Fchownat(int(parent.Fd()), name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err == nil {
			// mknod honours the umask; the mode must be exact.
			err = unix.Fchmodat(int(parent.Fd()), name, mode&0o7777, 0)
		}
		_ = parent.Close()
		if err != nil {
			return fmt.Errorf("device %s: %w", d.Path, err)
		}
	}
	// The links every Linux /dev has.
	links := map[string]string{"/proc/self/fd": "fd", "/proc/self/fd/0": "stdin", "/proc/self/fd/1": "stdout", "/proc/self/fd/2": "stderr", "pts/ptmx": "ptmx"}
	dev, err := pathrs.OpenatInRoot(root, "/dev")
	if err != nil {
		return err
	}
	defer func() { _ = dev.Close() }()
	for target, name := range links {
		if err := unix.Symlinkat(target, int(dev.Fd()), name); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("/dev/%s: %w", name, err)
		}
	}
	return nil
}

// pivotRoot makes rootfs the root and drops the old one, so that nothing
// of the host's filesystem is reachable from the container.
func pivotRoot(rootfs string) error {
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer func() { _ = unix.Close(oldroot) }()
	if err := unix.Chdir(rootfs); err != nil {
		return err
	}
	// pivot_root(".", ".") stacks the old root on the new one, where it
	// can be unmounted without a directory of its own.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	// From the old root, so that only it becomes a slave (its unmount must
	// not reach the host), not the container's own mounts.
	if err := unix.Fchdir(oldroot); err != nil {
		return err
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmounting the old root: %w", err)
	}
	return unix.Chdir("/")
}

func maskPath(p string) error {
	fi, err := os.Stat(p)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "size=0")
	}
	return unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
}

func readonlyPath(p string) error {
	if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	return unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC|lockedFlags(p), "")
}

// lockedFlags are the nosuid, nodev, noexec and atime flags a mount has: a
// bind remount that leaves them out clears them (or fails, when they are
// locked), so a read-only remount must repeat them.
func lockedFlags(p string) uintptr {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return 0
	}
	var f uintptr
	for bit, mf := range map[int64]uintptr{
		unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC,
		unix.ST_NOATIME: unix.MS_NOATIME, unix.ST_NODIRATIME: unix.MS_NODIRATIME, unix.ST_RELATIME: unix.MS_RELATIME,
	} {
		if st.Flags&bit != 0 {
			f |= mf
		}
	}
	return f
}

// mountCgroups shows the container its own cgroups at m.Destination. On a
// cgroup v2 host that is a cgroup2 mount; on v1 there is no such single
// filesystem, so, as runc does without a cgroup namespace, it is a tmpfs
// holding, per hierarchy, a bind mount of the container's cgroup directory.
func mountCgroups(root *os.File, m specs.Mount, cgroupPath string) error {
	flags, _, _ := parseMountOptions(m.Options)
	ro := flags&unix.MS_RDONLY != 0
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return err
	}
	target, err := destination(root, m.Destination, true)
	if err != nil {
		return err
	}
	defer func() { _ = target.Close() }()
	at := fmt.Sprintf("/proc/self/fd/%d", target.Fd())
	base := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		if ro {
			base |= unix.MS_RDONLY
		}
		return unix.Mount("cgroup2", at, "cgroup2", base, "")
	}
	if err := unix.Mount("tmpfs", at, "tmpfs", base, "mode=755"); err != nil {
		return err
	}
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return err
	}
	for _, e := range entries {
		src := filepath.Join("/sys/fs/cgroup", e.Name())
		var fs unix.Statfs_t
		if !e.IsDir() || unix.Statfs(src, &fs) != nil || fs.Type != unix.CGROUP_SUPER_MAGIC {
			continue // symlinks of co-mounted controllers, the unified hierarchy
		}
		src = filepath.Join(src, cgroupPath)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		sub, err := destination(root, filepath.Join(m.Destination, e.Name()), true)
		if err != nil {
			return err
		}
		subAt := fmt.Sprintf("/proc/self/fd/%d", sub.Fd())
		err = unix.Mount(src, subAt, "", unix.MS_BIND, "")
		if err == nil && ro {
			_ = sub.Close()
			if sub, err = pathrs.OpenatInRoot(root, filepath.Join(m.Destination, e.Name())); err != nil {
				return err
			}
			err = unix.Mount("", fmt.Sprintf("/proc/self/fd/%d", sub.Fd()), "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|base, "")
		}
		_ = sub.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", e.Name(), err)
		}
	}
	if ro {
		again, err := pathrs.OpenatInRoot(root, m.Destination)
		if err != nil {
			return err
		}
		defer func() { _ = again.Close() }()
		return unix.Mount("", fmt.Sprintf("/proc/self/fd/%d", again.Fd()), "", unix.MS_REMOUNT|unix.MS_RDONLY|base, "mode=755")
	}
	return nil
}

// RecursiveReadOnlySupported reports whether the kernel has mount_setattr
// (Linux 5.12), which "rro" mounts need. A call on no descriptor fails
// with EBADF where it exists.
func RecursiveReadOnlySupported() bool {
	err := unix.MountSetattr(-1, "", unix.AT_EMPTY_PATH, &unix.MountAttr{})
	return !errors.Is(err, unix.ENOSYS)
}

// inUserNamespace tells whether this process runs in a user namespace
// other than the host's, whose uid_map is the whole range.
func inUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) != 3 || f[0] != "0" || f[1] != "0" || f[2] != "4294967295"
}

// bindHostDevice binds the host's node of d (at the same path, which must
// be that device) onto an empty file name in parent, before the pivot.
func bindHostDevice(parent *os.File, name string, d specs.LinuxDevice) error {
	var st unix.Stat_t
	if err := unix.Stat(d.Path, &st); err != nil {
		return fmt.Errorf("the host has no %s to bind in a user namespace: %w", d.Path, err)
	}
	kind := uint32(unix.S_IFCHR)
	if d.Type == "b" {
		kind = unix.S_IFBLK
	}
	if st.Rdev != unix.Mkdev(uint32(d.Major), uint32(d.Minor)) || st.Mode&unix.S_IFMT != kind {
		return fmt.Errorf("the host's %s is another device than %s %d:%d, and a user namespace cannot make it", d.Path, d.Type, d.Major, d.Minor)
	}
	fd, err := unix.Openat(int(parent.Fd()), name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_ = unix.Close(fd)
	target, err := pathrs.OpenatInRoot(parent, name)
	if err != nil {
		return err
	}
	defer func() { _ = target.Close() }()
	return unix.Mount(d.Path, fmt.Sprintf("/proc/self/fd/%d", target.Fd()), "", unix.MS_BIND, "")
}
