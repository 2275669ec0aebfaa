package linux

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// SealedBinary returns a sealed in-memory copy of the binary at path
// (husk-runtime), to run container-init, the monitor and the pod init from.
// A process in a container that gets hold of /proc/<pid>/exe of one of them
// finds this copy, which nothing can write (the seals are permanent), not
// the binary on the host that every later container runs: the attack of
// CVE-2019-5736. The copy lives in memory once, however many containers
// use it.
func SealedBinary(path string) (*os.File, error) {
	self, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = self.Close() }()
	fd, err := unix.MemfdCreate(filepath.Base(path), unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "husk (sealed)")
	if _, err := io.Copy(f, self); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("copying %s: %w", path, err)
	}
	// Execute-only: a program run from a file its user cannot read is not
	// dumpable, and its memory belongs to the host's user namespace even
	// when it joins a pod's (the kernel ties it to a namespace that can
	// read the file), so the root of a pod's user namespace, with
	// CAP_SYS_PTRACE there, cannot look into a runtime setting up a
	// container of that pod.
	if err := unix.Fchmod(fd, 0o111); err != nil {
		_ = f.Close()
		return nil, err
	}
	// F_SEAL_FUTURE_WRITE, not F_SEAL_WRITE: both refuse every write(2),
	// truncation and new writable mapping through any descriptor, but
	// F_SEAL_WRITE first waits for the kernel to drop its own transient
	// references to the pages just written (a per-CPU LRU batch on another
	// CPU holds one) and fails with EBUSY if they outlive its short wait; a
	// daemon on a busy machine then failed to start. There is no writable
	// mapping of this memfd for F_SEAL_WRITE to guard against.
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_FUTURE_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("sealing the copy of %s: %w", path, err)
	}
	return f, nil
}
