package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

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

// unmountBundle unmounts what a container's bundle holds mounted: the
// mounts made for a user namespace, each by its path (stacked ones too),
// then anything else below the bundle that the mount table shows.
func unmountBundle(bundle string) error {
	dir := filepath.Join(bundle, "mounts")
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		for {
			err := unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				break
			}
			if err != nil {
				return fmt.Errorf("unmounting %s: %w", p, err)
			}
		}
	}
	return unmountUnder(bundle)
}

// removeTree removes dir and what it holds, as os.RemoveAll does, but
// never descends into another mount: a volume still mounted below a bundle
// must not lose its files to a cleanup.
func removeTree(dir string) error {
	id, err := mountID(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return removeWithin(dir, id)
}

func removeWithin(path string, id uint64) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		mid, err := mountID(path)
		if err != nil {
			return err
		}
		if mid != id {
			return fmt.Errorf("%s is a mount point: what it holds is not removed", path)
		}
		entries, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := removeWithin(filepath.Join(path, e.Name()), id); err != nil {
				return err
			}
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func mountID(path string) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, &fs.PathError{Op: "statx", Path: path, Err: err}
	}
	return stx.Mnt_id, nil
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
