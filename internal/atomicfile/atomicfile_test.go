package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "record.json")
	for _, o := range []Options{{}, {Durable: true}, {TempDir: t.TempDir()}} {
		for _, content := range []string{"first", "second, longer than the first", ""} {
			if err := Write(p, []byte(content), 0o640, o); err != nil {
				t.Fatalf("%+v: %v", o, err)
			}
			b, err := os.ReadFile(p)
			if err != nil || string(b) != content {
				t.Errorf("%+v: read %q, %v; want %q", o, b, err, content)
			}
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o640 {
				t.Errorf("%+v: mode %v, %v", o, fi.Mode(), err)
			}
		}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
		t.Errorf("left in the directory: %v, %v", entries, err)
	}
}

func TestWriteFailureLeavesTheOldFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := Write(p, []byte("old"), 0o600, Options{}); err != nil {
		t.Fatal(err)
	}
	// A temporary directory on another filesystem fails the rename (EXDEV).
	other := "/dev/shm"
	if fi, err := os.Stat(other); err != nil || !fi.IsDir() {
		t.Fatalf("%s: %v", other, err)
	}
	tmp, err := os.MkdirTemp(other, "atomicfile-")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	if err := Write(p, []byte("new"), 0o600, Options{TempDir: tmp}); err == nil {
		t.Fatalf("renamed from %s to %s: not another filesystem", tmp, dir)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "old" {
		t.Errorf("after a failed write: %q, %v", b, err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("the failed write left %v", entries)
	}
}
