package ns

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// User is a pod's own user namespace (Kubernetes' hostUsers: false).
const User Type = "user"

// PinUser creates a user namespace with the given mappings, pinned at
// userPath, and, owned by it, one new namespace of each type in pins; then
// it runs setup inside those, as Pin does. Namespaces must belong to the
// pod's user namespace for its root to mount proc and sysfs in them.
//
// Only a single-threaded process can create a user namespace, which a Go
// program never is: holder is started in the new namespaces (os/exec
// clones before it executes, and writes the mappings) and must run until
// its standard input closes (husk-runtime hold). On error nothing is left
// pinned.
func PinUser(holder *exec.Cmd, userPath string, uids, gids []syscall.SysProcIDMap, pins map[Type]string, setup func() error) (err error) {
	flags := unix.CLONE_NEWUSER
	for t := range pins {
		f, ok := cloneFlags[t]
		if !ok {
			return fmt.Errorf("namespace type %q cannot be pinned empty", t)
		}
		flags |= f
	}
	stop, err := startHolder(holder, flags, uids, gids)
	if err != nil {
		return err
	}
	defer stop()
	var pinned []string
	defer func() {
		if err != nil {
			for _, p := range pinned {
				_ = Unpin(p)
			}
		}
	}()
	pid := holder.Process.Pid
	if err := PinProcess(pid, User, userPath); err != nil {
		return err
	}
	pinned = append(pinned, userPath)
	for t, path := range pins {
		if err := PinProcess(pid, t, path); err != nil {
			return err
		}
		pinned = append(pinned, path)
	}
	if setup != nil {
		return Do(pins, setup)
	}
	return nil
}

// WithUser runs fn with a descriptor of a new user namespace with the
// given mappings, which holder (as for PinUser) keeps while fn runs.
func WithUser(holder *exec.Cmd, uids, gids []syscall.SysProcIDMap, fn func(usernsFD int) error) error {
	stop, err := startHolder(holder, unix.CLONE_NEWUSER, uids, gids)
	if err != nil {
		return err
	}
	defer stop()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", holder.Process.Pid))
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	return fn(int(f.Fd()))
}

// startHolder starts holder in new namespaces (flags), the user namespace
// among them mapped as given; stop ends it.
func startHolder(holder *exec.Cmd, flags int, uids, gids []syscall.SysProcIDMap) (stop func(), err error) {
	stdin, err := holder.StdinPipe()
	if err != nil {
		return nil, err
	}
	holder.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  uintptr(flags),
		UidMappings: uids, GidMappings: gids,
		// The pod's processes may set their supplementary groups.
		GidMappingsEnableSetgroups: true,
		// No parent-death signal: it would come when the thread that
		// started the holder ends, and ns.Do retires threads. The holder
		// ends when its stdin closes, with the daemon at the latest.
	}
	if err := holder.Start(); err != nil {
		return nil, fmt.Errorf("creating the user namespace: %w", err)
	}
	return func() {
		_ = stdin.Close()
		_ = holder.Wait()
	}, nil
}
