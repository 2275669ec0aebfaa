package sandbox

import (
	"bytes"
	"errors"
	"os/exec"
	"testing"
)

// os/exec copies a command's output with io.Copy, which prefers the
// destination's ReadFrom: the cap must hold through that path too.
func TestExecOutputIsCappedThroughOSExec(t *testing.T) {
	out, errOut := cappedBuffer{n: 1000}, cappedBuffer{n: 1000}
	cmd := exec.Command("sh", "-c", "head -c 5000000 /dev/zero; head -c 300 /dev/zero >&2; exit 4")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Fatalf("the command's exit: %v", err)
	}
	if len(out.Bytes()) != 1000 || out.dropped != 5000000-1000 || !bytes.Equal(out.Bytes(), make([]byte, 1000)) {
		t.Errorf("stdout kept %d bytes and dropped %d, want 1000 and %d", len(out.Bytes()), out.dropped, 5000000-1000)
	}
	if len(errOut.Bytes()) != 300 || errOut.dropped != 0 {
		t.Errorf("stderr kept %d bytes and dropped %d, want 300 and 0", len(errOut.Bytes()), errOut.dropped)
	}
}
