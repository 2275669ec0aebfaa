package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A daemon killed while it forks leaves its lock's open file with the
// child until the child executes; a restart then must wait for it, not
// refuse. A child holding the lock's file (passed on, as between fork
// and exec) for 300 ms after the daemon that locked it is gone stands in.
func TestRestartAfterACrashWaitsForALockHeldByAChild(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The child gets the locked open file itself (a new open of the path
	// would not hold the lock).
	lockFile := findLockFD(t, dir)
	child := exec.Command("sleep", "0.3")
	child.ExtraFiles = []*os.File{lockFile}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Wait() }()
	_ = lockFile.Close()
	unlock() // the daemon is gone; its child still holds the lock
	start := time.Now()
	unlock2, err := lockDir(dir)
	if err != nil {
		t.Fatalf("restart with the lock held by a dying daemon's child: %v", err)
	}
	unlock2()
	t.Logf("took the lock after %v", time.Since(start))
}

// A lock still held after the wait is refused, naming who holds it: after
// a crash, the child with the lock's file, not the dead daemon.
func TestHeldLockIsRefusedNamingTheHolder(t *testing.T) {
	old := lockWait
	lockWait = 200 * time.Millisecond
	defer func() { lockWait = old }()
	dir := t.TempDir()
	unlock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	lockFile := findLockFD(t, dir)
	child := exec.Command("sleep", "5")
	child.ExtraFiles = []*os.File{lockFile}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	_ = lockFile.Close()
	unlock()
	_, err = lockDir(dir)
	if err == nil || !strings.Contains(err.Error(), "in use by another husk daemon") || !strings.Contains(err.Error(), fmt.Sprintf(`pid %d: "sleep 5"`, child.Process.Pid)) {
		t.Errorf("a lock held by a child: %v", err)
	}
}

// findLockFD returns a duplicate of this process's descriptor of
// dir/husk.lock: the same open file.
func findLockFD(t *testing.T, dir string) *os.File {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && target == filepath.Join(dir, "husk.lock") {
			fd, _ := strconv.Atoi(e.Name())
			dup, err := unix.Dup(fd)
			if err != nil {
				t.Fatal(err)
			}
			return os.NewFile(uintptr(dup), target)
		}
	}
	t.Fatal("the lock's descriptor is not open")
	return nil
}
