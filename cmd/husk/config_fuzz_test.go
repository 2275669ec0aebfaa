package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The config file is the daemon's one input besides the CRI; whatever it
// holds, loading it gives a config or an error.
func FuzzLoadConfig(f *testing.F) {
	if b, err := os.ReadFile("../../deploy/config.toml"); err == nil {
		f.Add(string(b))
	}
	for _, s := range []string{"", "listen = 1", "[registry.\"x\"]\nmirrors = [\"http://127.0.0.1:1\"]\n", "pinned_images = [\"*\"]",
		"[runtimes.runc]\npath = \"/usr/sbin/runc\"\n", "pull_progress_timeout = \"-1s\"", "[[x]]\n[x]"} {
		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, s string) {
		p := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = loadConfig(p, true)
	})
}
