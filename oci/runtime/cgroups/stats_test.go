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
	got, err := readKeys(stat, "workingset_refault_anon", "workingset_refault_file", "workingset_refault")
	if err != nil || len(got) != 2 || got["workingset_refault_anon"] != 7 || got["workingset_refault_file"] != 12 {
		t.Errorf("readKeys = %v, %v", got, err)
	}
	if ok, err := hasKey(stat, "anon"); !ok || err != nil {
		t.Errorf("hasKey(anon) = %v, %v", ok, err)
	}
	if ok, err := hasKey(stat, "file"); ok || err != nil {
		t.Errorf("hasKey(file) = %v, %v", ok, err)
	}
	if got, err := readKeys(filepath.Join(dir, "missing"), "anon"); len(got) != 0 || err != nil {
		t.Errorf("readKeys of a missing file = %v, %v", got, err)
	}
	bad := filepath.Join(dir, "bad")
	_ = os.WriteFile(bad, []byte("anon lots\nfile 1\n"), 0o600)
	if _, err := readKeys(bad, "anon"); err == nil {
		t.Error("readKeys of a value that is not a number: no error")
	}
	if got, err := readKeys(bad, "file"); err != nil || got["file"] != 1 {
		t.Errorf("readKeys past a line not asked for that is not a number: %v, %v", got, err)
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
