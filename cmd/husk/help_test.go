package main

import (
	"bytes"
	"strings"
	"testing"
)

// The help says where the config is, what its keys are and what the
// signals do.
func TestHelpNamesTheConfigAndTheSignals(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), defaultConfigPath) {
		t.Errorf("husk help: exit %d, %q", code, out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"serve", "--help"}, &out, &errb); code != 0 {
		t.Errorf("husk serve --help: exit %d", code)
	}
	help := errb.String() + out.String()
	for _, want := range []string{defaultConfigPath, "SIGHUP", "SIGTERM", "registry_certs_dirs", "metrics.address", "-cgroup-driver"} {
		if !strings.Contains(help, want) {
			t.Errorf("husk serve --help does not mention %s:\n%s", want, help)
		}
	}
}
