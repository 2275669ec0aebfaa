package cgroups

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadKeyAndLimit(t *testing.T) {
	dir := t.TempDir()
	stat := filepath.Join(dir, "memory.stat")
	if err := os.WriteFile(stat, []byte("anon 4096\nworkingset_refault_anon 7\nworkingset_refault_file 12\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]uint64{"workingset_refault_anon": 7, "workingset_refault_file": 12, "workingset_refault": 0} {
		if got, err := readKey(stat, key); err != nil || got != want {
			t.Errorf("readKey(%s) = %d, %v; want %d", key, got, err, want)
		}
	}
	if ok, err := hasKey(stat, "anon"); !ok || err != nil {
		t.Errorf("hasKey(anon) = %v, %v", ok, err)
	}
	if got, err := readKey(filepath.Join(dir, "missing"), "anon"); got != 0 || err != nil {
		t.Errorf("readKey of a missing file = %d, %v", got, err)
	}
	bad := filepath.Join(dir, "bad")
	_ = os.WriteFile(bad, []byte("anon lots\n"), 0o600)
	if _, err := readKey(bad, "anon"); err == nil {
		t.Error("readKey of a value that is not a number: no error")
	}

	for content, want := range map[string]uint64{
		"max\n":                 0, // v2: no limit
		"9223372036854771712\n": 0, // v1: no limit
		"67108864\n":            64 << 20,
	} {
		f := filepath.Join(dir, "limit")
		_ = os.WriteFile(f, []byte(content), 0o600)
		if got, err := readLimit(f); err != nil || got != want {
			t.Errorf("readLimit(%q) = %d, %v; want %d", content, got, err, want)
		}
	}
	if got, err := readLimit(filepath.Join(dir, "missing")); got != 0 || err != nil {
		t.Errorf("readLimit of a missing file = %d, %v", got, err)
	}
}
