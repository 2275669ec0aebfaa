package e2e

import (
	"io"
	"testing"
)

// An exec probe that writes without end must not grow the daemon
// (containerd's CVE-2022-31030): ExecSync keeps 1 MiB of each stream and
// still returns the exit code; a streamed exec is copied with backpressure.
func TestExecOutputDoesNotGrowTheDaemon(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "flood")
	id := e.run(t, podID, pod, ctrConfig("target", e.image("plain"), "sleep", "300"))
	pid := e.d.cmd.Process.Pid
	// A first small exec: what every exec needs is in the idle figure.
	if _, err := e.exec(t, id, 30, "true"); err != nil {
		t.Fatal(err)
	}
	idle := statusKiB(t, pid, "VmRSS")
	resp, err := e.exec(t, id, 120, "sh", "-c", "head -c 300000000 /dev/zero; head -c 9000000 /dev/zero >&2; exit 7")
	peak := statusKiB(t, pid, "VmHWM")
	t.Logf("daemon RSS idle %.0f KiB, peak during a 300 MB ExecSync %.0f KiB", idle, peak)
	if err != nil {
		t.Fatalf("ExecSync of 300 MB: %v", err)
	}
	if resp.ExitCode != 7 || len(resp.Stdout) != 1<<20 || len(resp.Stderr) != 1<<20 {
		t.Errorf("ExecSync of 300 MB: exit %d, %d bytes of stdout, %d of stderr; want 7 and 1 MiB of each", resp.ExitCode, len(resp.Stdout), len(resp.Stderr))
	}
	if peak-idle > 24<<10 {
		t.Errorf("the daemon grew from %.0f KiB to a peak of %.0f KiB during a 300 MB ExecSync", idle, peak)
	}

	// Streamed: crictl reads it all, the daemon holds none of it.
	cmd := e.d.crictlCommand(t.Context(), "exec", id, "head", "-c", "300000000", "/dev/zero")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil || n != 300000000 {
		t.Errorf("crictl exec of 300 MB: %d bytes, %v", n, err)
	}
	peak = statusKiB(t, pid, "VmHWM")
	t.Logf("daemon peak RSS after a streamed 300 MB exec %.0f KiB", peak)
	if peak-idle > 24<<10 {
		t.Errorf("the daemon grew from %.0f KiB to a peak of %.0f KiB during a streamed 300 MB exec", idle, peak)
	}
}
