// Package ns creates Linux namespaces that outlive any process, by binding
// them onto files (as `ip netns add` does), and runs code or starts
// processes inside them.
//
// A pod's network, IPC and UTS namespaces are pinned this way, so that no
// pause process and no pause image are needed to keep them.
package ns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Type names a kind of namespace as /proc/<pid>/ns does.
type Type string

// The namespace types a pod pins.
const (
	Net Type = "net"
	IPC Type = "ipc"
	UTS Type = "uts"
	PID Type = "pid"
)

var cloneFlags = map[Type]int{Net: unix.CLONE_NEWNET, IPC: unix.CLONE_NEWIPC, UTS: unix.CLONE_NEWUTS}

// Flag is the clone/setns flag of t.
func (t Type) Flag() int {
	if t == PID {
		return unix.CLONE_NEWPID
	}
	return cloneFlags[t]
}

var sharedDirs sync.Map

// makeShared turns dir into a shared mount of itself, once. Mount namespaces
// made later (containers) copy the pins; with shared propagation, unpinning
// here reaches those copies too, so a namespace is not kept alive by a
// copy nobody knows about. iproute2 does the same for /run/netns.
func makeShared(dir string) error {
	if _, done := sharedDirs.Load(dir); done {
		return nil
	}
	mounted, err := mountinfo.Mounted(dir)
	if err != nil {
		return err
	}
	if !mounted {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mounting %s onto itself: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making %s a shared mount: %w", dir, err)
	}
	sharedDirs.Store(dir, true)
	return nil
}

// Pin creates one new namespace of each type in pins and binds it onto the
// file named there (created; its directory must exist and be a shared
// mount point made with PrepareDir). setup, when not nil, runs inside the
// new namespaces first, on the thread that made them: for the hostname and
// sysctls. On error nothing is left pinned.
func Pin(pins map[Type]string, setup func() error) error {
	flags := 0
	for t := range pins {
		f, ok := cloneFlags[t]
		if !ok {
			return fmt.Errorf("namespace type %q cannot be pinned empty", t)
		}
		flags |= f
	}
	errc := make(chan error, 1)
	go func() {
		// The thread ends up in other namespaces than the rest of the
		// process; never unlocking it makes Go discard it with the goroutine.
		runtime.LockOSThread()
		errc <- pinOnThisThread(pins, flags, setup)
	}()
	return <-errc
}

func pinOnThisThread(pins map[Type]string, flags int, setup func() error) (err error) {
	if err := unix.Unshare(flags); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	var pinned []string
	defer func() {
		if err != nil {
			for _, p := range pinned {
				_ = Unpin(p)
			}
		}
	}()
	tid := unix.Gettid()
	for t, path := range pins {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if err != nil {
			return fmt.Errorf("creating %s namespace file: %w", t, err)
		}
		_ = f.Close()
		src := fmt.Sprintf("/proc/%d/task/%d/ns/%s", os.Getpid(), tid, t)
		if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
			_ = os.Remove(path)
			return fmt.Errorf("pinning %s namespace at %s: %w", t, path, err)
		}
		pinned = append(pinned, path)
	}
	if setup != nil {
		return setup()
	}
	return nil
}

// PinProcess binds the namespace of type t of process pid onto path.
func PinProcess(pid int, t Type, path string) error {
	return pinFile(fmt.Sprintf("/proc/%d/ns/%s", pid, t), string(t), path)
}

// PinProcessChildren binds the PID namespace the children of process pid
// are born in (after it unshared one) onto path.
func PinProcessChildren(pid int, path string) error {
	return pinFile(fmt.Sprintf("/proc/%d/ns/pid_for_children", pid), "pid", path)
}

func pinFile(src, kind, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("creating %s namespace file: %w", kind, err)
	}
	_ = f.Close()
	if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("pinning %s at %s: %w", src, path, err)
	}
	return nil
}

// Unpin releases a pinned namespace and removes its file. A namespace that
// is not pinned (any more) is not an error: teardown is retried after
// crashes.
func Unpin(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// IsPinned tells whether path holds a pinned namespace (a reboot or a
// manual umount loses them).
func IsPinned(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// PrepareDir creates dir and makes it a shared mount point for pins.
func PrepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	return makeShared(abs)
}

// Do runs fn on a thread that has joined the namespaces in paths (empty
// paths are skipped: the host's namespace is kept). Processes started by
// fn with os/exec are born in those namespaces; a PID namespace applies to
// such children only. The thread is thrown away after: the process must
// keep its main thread locked to its main goroutine (the daemon's init
// does), since Go parks the main thread instead, in those namespaces.
func Do(paths map[Type]string, fn func() error) error {
	var files []*os.File
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	type join struct {
		f    *os.File
		flag int
	}
	var joins []join
	// The PID namespace is joined last: setns into it does not move the
	// thread, only its future children.
	for _, t := range []Type{Net, IPC, UTS, PID} {
		p := paths[t]
		if p == "" {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("opening %s namespace: %w", t, err)
		}
		files = append(files, f)
		joins = append(joins, join{f, t.Flag()})
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		for _, j := range joins {
			if err := unix.Setns(int(j.f.Fd()), j.flag); err != nil {
				// Leaving the thread locked retires it, whatever state it is in.
				errc <- fmt.Errorf("joining namespace %s: %w", j.f.Name(), err)
				return
			}
		}
		errc <- fn()
	}()
	return <-errc
}
