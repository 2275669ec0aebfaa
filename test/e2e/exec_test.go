package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func (e *ctrEnv) exec(t *testing.T, id string, timeout int64, cmd ...string) (*runtimeapi.ExecSyncResponse, error) {
	t.Helper()
	return e.d.runtime.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: timeout})
}

func TestExecSync(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "exec")
	cfg := ctrConfig("target", e.image("plain"), "sleep", "300")
	cfg.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
	cfg.Envs = []*runtimeapi.KeyValue{{Key: "FROM_SPEC", Value: []byte("yes")}}
	cfg.WorkingDir = "/tmp"
	id := e.run(t, podID, pod, cfg)

	resp, err := e.exec(t, id, 10, "sh", "-c", "id -u; echo $FROM_SPEC; pwd; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc/self/fd | tr '\\n' ' '; echo oops >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(resp.Stdout)), "\n")
	if resp.ExitCode != 3 || len(lines) != 5 || lines[0] != "1000" || lines[1] != "yes" || lines[2] != "/tmp" ||
		!strings.HasPrefix(lines[3], "sleep 300") || strings.TrimSpace(lines[4]) != "0 1 2 3" || string(resp.Stderr) != "oops\n" {
		t.Errorf("exec: exit %d stdout %q stderr %q", resp.ExitCode, resp.Stdout, resp.Stderr)
	}
	// A command not in the container.
	resp, err = e.exec(t, id, 10, "no-such-command")
	if err != nil || resp.ExitCode != 127 || !strings.Contains(string(resp.Stderr), "no-such-command") {
		t.Errorf("missing command: %v, %v", resp, err)
	}
	// A timeout kills the command.
	start := time.Now()
	_, err = e.exec(t, id, 1, "sh", "-c", "sleep 77")
	if status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 10*time.Second {
		t.Errorf("exec past its timeout: %v after %v", err, time.Since(start))
	}
	waitFor(t, func() bool {
		out, _ := exec.Command("pgrep", "-f", "sleep 77").Output()
		return strings.TrimSpace(string(out)) == ""
	})
	// crictl exec --sync.
	if out := e.d.mustCrictl("exec", "-s", id, "echo", "via-crictl"); strings.TrimSpace(out) != "via-crictl" {
		t.Errorf("crictl exec -s: %q", out)
	}
	// Not in a container that does not run.
	stopped := e.create(t, podID, pod, ctrConfig("created", e.image("plain"), "true"))
	if _, err := e.exec(t, stopped, 10, "true"); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("exec in a created container: %v", err)
	}
}
