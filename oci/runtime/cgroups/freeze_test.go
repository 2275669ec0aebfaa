package cgroups

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestV1FreezeAndThaw: a frozen cgroup's busy process stops counting and
// goes on once thawed.
func TestV1FreezeAndThaw(t *testing.T) {
	testFreezeAndThaw(t, v1Manager(t, Cgroupfs), "freezer.state", "FROZEN")
}

func TestV2FreezeAndThaw(t *testing.T) {
	testFreezeAndThaw(t, v2Manager(t, Cgroupfs), "cgroup.freeze", "1")
}

func testFreezeAndThaw(t *testing.T, m *Manager, file, frozen string) {
	top := "/" + uniqueName(t)
	cleanupCgroup(t, m, top)
	if err := m.Create(top, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	counter := filepath.Join(dir, "n")
	p := startGated(t, `i=0; while true; do i=$((i+1)); echo $i > `+counter+`; done`)
	if err := m.AddProcess(top, p.pid()); err != nil {
		t.Fatal(err)
	}
	p.release(t)
	read := func() string { b, _ := os.ReadFile(counter); return strings.TrimSpace(string(b)) }
	eventually(t, 5*time.Second, func() string {
		if read() == "" {
			return "not counting yet"
		}
		return ""
	})
	if err := m.Freeze(t.Context(), top); err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(m.FreezerDir(top), file)); got != frozen {
		t.Errorf("%s = %q, want %q", file, got, frozen)
	}
	a := read()
	time.Sleep(200 * time.Millisecond)
	if b := read(); a != b {
		t.Errorf("a frozen process went on counting: %s, then %s", a, b)
	}
	if err := m.Thaw(top); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() string {
		if read() == a {
			return "thawed, still at " + a
		}
		return ""
	})
	p.kill()
}
