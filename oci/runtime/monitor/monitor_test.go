package monitor

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadProcessFile(t *testing.T) {
	dir := t.TempDir()
	for content, ok := range map[string]bool{
		"4242 987654\n": true,
		"4242 987654":   true,
		"":              false, // not written yet
		"4242":          false, // half a file
		"4242 98 7":     false,
		"abc 987654\n":  false,
		"0 987654\n":    false,
		"4242 -1\n":     false,
	} {
		p := filepath.Join(dir, PIDFile)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		pid, start, err := ReadProcessFile(p)
		if ok && (err != nil || pid != 4242 || start != 987654) {
			t.Errorf("%q: %d %d %v", content, pid, start, err)
		}
		if !ok && err == nil {
			t.Errorf("%q: no error (%d %d)", content, pid, start)
		}
	}
	if _, _, err := ReadProcessFile(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Errorf("a missing file: %v", err)
	}
}

func TestReadExit(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]*Exit{
		"0 1700000000000000000 0\n":   {Code: 0, FinishedAt: 1700000000000000000},
		"137 1700000000000000001 1\n": {Code: 137, FinishedAt: 1700000000000000001, OOMKilled: true},
		"-1 5 0\n":                    {Code: -1, FinishedAt: 5},
		"":                            nil,
		"0 17":                        nil, // half a file
		"x 1 0\n":                     nil,
		"0 1 0 extra\n":               nil,
		"4294967296 1 0\n":            nil, // not an int32
	} {
		if err := os.WriteFile(filepath.Join(dir, ExitFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadExit(dir)
		switch {
		case want == nil && err == nil:
			t.Errorf("%q: no error (%+v)", content, got)
		case want != nil && (err != nil || got != *want):
			t.Errorf("%q: %+v %v, want %+v", content, got, err, *want)
		}
	}
	if _, err := ReadExit(filepath.Join(dir, "none")); !os.IsNotExist(err) {
		t.Errorf("no exit file: %v", err)
	}
}
