package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// A container's CRI log is log_path below its pod's log_directory, and
// never anywhere else: log_path is checked to be relative and without ".."
// (cri/validate), and every open below the directory refuses symlinks, so
// that a symlink planted in the log directory (by a container with a
// hostPath volume over it, say) cannot send the log, or a read of it, onto
// another file of the host. The monitor opens the log the same way
// (oci/runtime/shim/monitor.c).

// RESOLVE_NO_SYMLINKS takes magic links with it.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS

// openLog opens a container's log file for reading, refusing what is not
// a regular file (a FIFO or device node planted there would block or be
// read): O_NONBLOCK until it is known.
func openLog(c *Container) (*os.File, error) {
	dir, rel := logLocation(c)
	f, err := openBeneath(dir, rel, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("%s is not a regular file: %w", f.Name(), errdefs.ErrFailedPrecondition)
	}
	return f, nil
}

// logLocation splits a container's log into the directory and the path
// below it. A record from before LogDir was kept has the full path alone:
// its last element is taken as the path below its directory.
func logLocation(c *Container) (dir, rel string) {
	if c.LogPath == "" {
		return "", ""
	}
	if c.LogDir != "" {
		return c.LogDir, c.Config.GetLogPath()
	}
	return filepath.Dir(c.LogPath), filepath.Base(c.LogPath)
}

// openBeneath opens rel below dir (itself taken as it is: kubelet's) with
// open(2)'s flags, following no symlink.
func openBeneath(dir, rel string, flags int, mode uint32) (*os.File, error) {
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer func() { _ = unix.Close(dfd) }()
	fd, err := unix.Openat2(dfd, rel, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: beneath})
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOTDIR) {
			err = fmt.Errorf("%w (a symlink, not a directory, or a path leaving the log directory): %w", err, errdefs.ErrFailedPrecondition)
		}
		return nil, &os.PathError{Op: "open", Path: filepath.Join(dir, rel), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir, rel)), nil
}

// mkdirBeneath makes the directories of rel below dir (kubelet's
// "NAME/ATTEMPT.log" has one), none through a symlink.
func mkdirBeneath(dir, rel string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sub := filepath.Dir(rel)
	if sub == "." {
		return nil
	}
	made := ""
	for _, e := range strings.Split(sub, "/") {
		made = filepath.Join(made, e)
		f, err := openBeneath(dir, filepath.Dir(made), unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		err = unix.Mkdirat(int(f.Fd()), e, 0o755)
		_ = f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return &os.PathError{Op: "mkdir", Path: filepath.Join(dir, made), Err: err}
		}
	}
	// What exists must be a directory, reached without a symlink.
	f, err := openBeneath(dir, sub, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// ReopenContainerLog makes the monitor of a running container reopen its
// log file, after kubelet moved it away to rotate it.
func (m *Manager) ReopenContainerLog(ctx context.Context, id string) error {
	c, unlock, err := m.lockContainer(id)
	if err != nil {
		return err
	}
	defer unlock()
	m.refresh(c)
	m.mu.Lock()
	mon := c.Monitor
	m.mu.Unlock()
	if m.running(c) == nil || mon == nil || !alive(mon) {
		return fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	if c.LogPath == "" {
		return nil
	}
	if err := unix.Kill(mon.PID, unix.SIGUSR1); err != nil {
		return fmt.Errorf("signalling the monitor: %w", err)
	}
	for range 200 {
		if f, err := openLog(c); err == nil {
			_ = f.Close()
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("the monitor of container %s did not reopen %s (it opens no symlink and nothing outside the log directory): %w", c.ID, c.LogPath, errdefs.ErrFailedPrecondition)
}
