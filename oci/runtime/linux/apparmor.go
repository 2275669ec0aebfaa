package linux

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// applyAppArmor makes the kernel put this process under the AppArmor
// profile at its next exec, the container's command ("exec NAME" written to
// the thread's attr/apparmor/exec, as runc does). The attribute is the
// thread's, so the thread is kept for the exec. The file is checked to be
// procfs's: the container's /proc is mounted from inside it by now.
func applyAppArmor(profile string) error {
	if profile == "" {
		return nil
	}
	runtime.LockOSThread()
	f, err := os.OpenFile("/proc/thread-self/attr/apparmor/exec", os.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		// Kernels before 5.8 have the LSM-shared file only.
		f, err = os.OpenFile("/proc/thread-self/attr/exec", os.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return fmt.Errorf("applying AppArmor profile %s: %w", profile, err)
	}
	defer func() { _ = f.Close() }()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Type != unix.PROC_SUPER_MAGIC {
		return fmt.Errorf("applying AppArmor profile %s: %s is not procfs's", profile, f.Name())
	}
	if _, err := f.WriteString("exec " + profile); err != nil {
		return fmt.Errorf("applying AppArmor profile %s: %w", profile, err)
	}
	return nil
}
