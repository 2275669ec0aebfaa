package ns

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestPinMakesNewNamespacesThatOutliveTheThread(t *testing.T) {
	// This goroutine's thread stays in the host's namespaces to compare with.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dir := t.TempDir()
	if err := PrepareDir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	pins := map[Type]string{Net: filepath.Join(dir, "net"), IPC: filepath.Join(dir, "ipc"), UTS: filepath.Join(dir, "uts")}
	err := Pin(pins, func() error { return unix.Sethostname([]byte("pinned-host")) })
	if err != nil {
		t.Fatal(err)
	}
	for typ, p := range pins {
		if !IsPinned(p) {
			t.Errorf("%s not pinned", typ)
		}
		if inode(t, p) == inode(t, "/proc/thread-self/ns/"+string(typ)) {
			t.Errorf("%s namespace is the host's", typ)
		}
	}
	var hostname string
	if err := Do(map[Type]string{UTS: pins[UTS]}, func() error {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return err
		}
		hostname = unix.ByteSliceToString(u.Nodename[:])
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if hostname != "pinned-host" {
		t.Errorf("hostname in the pinned UTS namespace = %q", hostname)
	}
	if h, _ := os.Hostname(); h == "pinned-host" {
		t.Error("the host's hostname changed")
	}
	for _, p := range pins {
		if err := Unpin(p); err != nil {
			t.Error(err)
		}
		if err := Unpin(p); err != nil {
			t.Errorf("second unpin: %v", err)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there", p)
		}
	}
}

func TestFailedPinLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	if err := PrepareDir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	pins := map[Type]string{Net: filepath.Join(dir, "net"), UTS: filepath.Join(dir, "uts")}
	err := Pin(pins, func() error { return os.ErrInvalid })
	if err == nil {
		t.Fatal("setup error not returned")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}
