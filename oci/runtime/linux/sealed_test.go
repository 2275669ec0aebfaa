package linux

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// The copy must be the running binary, byte for byte, and nothing may
// change it afterwards: not a write through /proc/<pid>/fd (what a process
// in a container would reach), not a truncation, not a writable mapping.
func TestSealedBinaryIsACopyNothingCanChange(t *testing.T) {
	// Many rounds: sealing once failed with EBUSY now and then.
	for i := 0; i < 50; i++ {
		f, err := SealedBinary("/proc/self/exe")
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		_ = f.Close()
	}
	f, err := SealedBinary("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()

	want, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	path := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the sealed copy differs from /proc/self/exe (%d bytes, want %d)", len(got), len(want))
	}

	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("reopening for writing: %v (the mode alone must not be what protects it)", err)
	}
	defer func() { _ = w.Close() }()
	if _, err := w.Write([]byte("overwritten")); !errors.Is(err, unix.EPERM) {
		t.Errorf("write through a reopened descriptor: %v, want EPERM", err)
	}
	if err := unix.Ftruncate(int(w.Fd()), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("ftruncate: %v, want EPERM", err)
	}
	if m, err := unix.Mmap(int(w.Fd()), 0, 4096, unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
		_ = unix.Munmap(m)
		t.Error("a writable shared mapping was allowed")
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE); !errors.Is(err, unix.EPERM) {
		t.Errorf("adding a seal afterwards: %v, want EPERM (F_SEAL_SEAL)", err)
	}
	again, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(again, want) {
		t.Errorf("the copy changed (err %v)", err)
	}
}
