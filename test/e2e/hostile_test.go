package e2e

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
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

// A container's log is written below its pod's log_directory and nowhere
// else: no "..", no symlink planted there followed, to a file or a
// directory, at create, start or reopen.
func TestLogsStayInTheirDirectory(t *testing.T) {
	e := newCtrEnv(t)
	outside := t.TempDir()
	target := filepath.Join(outside, "target")
	if err := os.WriteFile(target, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	podID, pod := e.pod(t, "logs-escape")
	logDir := pod.LogDirectory
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}

	cfg := ctrConfig("dotdot", e.image("plain"), "echo", "hi")
	cfg.LogPath = "../../escape.log"
	_, err := e.d.runtime.CreateContainer(t.Context(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	wantCode(t, err, codes.InvalidArgument, "config.log_path")

	// A symlink to a file of the host: the container does not start,
	// and the file is as it was.
	if err := os.Symlink(target, filepath.Join(logDir, "planted.log")); err != nil {
		t.Fatal(err)
	}
	cfg = ctrConfig("planted", e.image("plain"), "echo", "overwritten")
	cfg.LogPath = "planted.log"
	id := e.create(t, podID, pod, cfg)
	_, err = e.d.runtime.StartContainer(t.Context(), &runtimeapi.StartContainerRequest{ContainerId: id})
	if err == nil {
		e.waitExited(t, id)
		t.Error("a container whose log path is a symlink started")
	}
	// A symlink to a directory of the host.
	if err := os.Symlink(outside, filepath.Join(logDir, "sub")); err != nil {
		t.Fatal(err)
	}
	cfg = ctrConfig("subdir", e.image("plain"), "echo", "hi")
	cfg.LogPath = "sub/0.log"
	_, err = e.d.runtime.CreateContainer(t.Context(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	wantCode(t, err, codes.FailedPrecondition, "")

	// A symlink planted where a rotated log was: the monitor keeps its
	// old file rather than follow it.
	cfg = ctrConfig("rotated", e.image("plain"), "sh", "-c", "while true; do echo tick; sleep 0.1; done")
	cfg.LogPath = "rotated.log"
	id = e.run(t, podID, pod, cfg)
	logPath := filepath.Join(logDir, "rotated.log")
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, logPath); err != nil {
		t.Fatal(err)
	}
	_, err = e.d.runtime.ReopenContainerLog(t.Context(), &runtimeapi.ReopenContainerLogRequest{ContainerId: id})
	wantCode(t, err, codes.FailedPrecondition, "")
	time.Sleep(300 * time.Millisecond)
	if b, _ := os.ReadFile(target); string(b) != "precious\n" {
		t.Errorf("the file a planted symlink names holds %q", b)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("the directory a planted symlink names holds %d entries, want 1", len(entries))
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(logDir)), "escape.log")); err == nil {
		t.Error("a log was written two directories up")
	}

	// log_directory must be absolute.
	rel := podConfig("relative-logs")
	rel.LogDirectory = "relative/logs"
	_, err = e.d.runtime.RunPodSandbox(t.Context(), &runtimeapi.RunPodSandboxRequest{Config: rel})
	wantCode(t, err, codes.InvalidArgument, "config.log_directory")
}

// wantCode checks an error's gRPC code, and that its message names field.
func wantCode(t *testing.T, err error, code codes.Code, field string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), field) {
		t.Errorf("want %v naming %q, got %v", code, field, err)
	}
}
