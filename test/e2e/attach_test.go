package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// crictl attach -i to a container created with stdin and stdin_once: what
// it types is the container's input, its stdout and stderr come back
// apart, and the end of the session closes the container's stdin.
func TestAttachWithStdinOnce(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "attach")
	cfg := ctrConfig("reader", e.image("plain"), "sh", "-c", `read line; echo "got:$line"; echo oops >&2; read rest; echo "after:[$rest]"`)
	cfg.Stdin, cfg.StdinOnce = true, true
	id := e.run(t, podID, pod, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := e.d.crictlCommand(ctx, "attach", "-i", id)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader("hello\n")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("crictl attach -i: %v\nstdout %q\nstderr %q", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "got:hello") || !strings.Contains(stderr.String(), "oops") {
		t.Errorf("crictl attach -i: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	st := e.waitExited(t, id)
	if st.ExitCode != 0 {
		t.Errorf("exit code %d", st.ExitCode)
	}
	// stdin_once: the second read saw the end of its input.
	if logs := strings.Join(output(t, st.LogPath, "stdout"), "\n"); !strings.Contains(logs, "got:hello") || !strings.Contains(logs, "after:[]") {
		t.Errorf("the container's log: %q", logs)
	}
}

// Attach without input sees what the container writes from then on; a
// container that ends ends the session.
func TestAttachToOutput(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "attach-out")
	id := e.run(t, podID, pod, ctrConfig("ticker", e.image("plain"), "sh", "-c", `for i in 1 2 3 4 5 6 7 8 9 10; do echo "tick $i"; sleep 0.2; done`))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := e.d.crictlCommand(ctx, "attach", id).Output()
	if err != nil || !strings.Contains(string(out), "tick 10") {
		t.Errorf("crictl attach: %q, %v", out, err)
	}
	if st := e.waitExited(t, id); st.ExitCode != 0 {
		t.Errorf("exit code %d", st.ExitCode)
	}
}

// crictl attach -it to a container with a terminal: input, output and
// the size go through the terminal.
func TestAttachWithTerminal(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "attach-tty")
	cfg := ctrConfig("shell", e.image("plain"), "sh", "-c", `read line; echo "got:$line"; stty size; sleep 1`)
	cfg.Stdin, cfg.Tty = true, true
	id := e.run(t, podID, pod, cfg)

	// The session must be up before the line is typed: the container
	// reads its terminal, where nothing waits for an attach.
	out, err := crictlTyping(t, e, 33, 99, "typed\r", "attach", "-i", "-t", id)
	if err != nil {
		t.Errorf("crictl attach -it: %v", err)
	}
	if !strings.Contains(out, "got:typed") || !strings.Contains(out, "33 99") {
		t.Errorf("crictl attach -it printed %q", out)
	}
}

func TestAttachRefusals(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "attach-no")
	id := e.run(t, podID, pod, ctrConfig("plain", e.image("plain"), "sleep", "300"))
	ctx := context.Background()
	for name, tc := range map[string]struct {
		req  *runtimeapi.AttachRequest
		code codes.Code
		word string
	}{
		"no id":               {&runtimeapi.AttachRequest{Stdout: true}, codes.InvalidArgument, "container_id"},
		"no stream":           {&runtimeapi.AttachRequest{ContainerId: id}, codes.InvalidArgument, "stdin, stdout, stderr"},
		"stdin without stdin": {&runtimeapi.AttachRequest{ContainerId: id, Stdin: true}, codes.InvalidArgument, "stdin"},
		"tty without tty":     {&runtimeapi.AttachRequest{ContainerId: id, Stdout: true, Tty: true}, codes.InvalidArgument, "tty"},
		"unknown container":   {&runtimeapi.AttachRequest{ContainerId: "nope", Stdout: true}, codes.NotFound, "nope"},
	} {
		_, err := e.d.runtime.Attach(ctx, tc.req)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.word) {
			t.Errorf("%s: %v, want %v naming %q", name, err, tc.code, tc.word)
		}
	}
	if _, err := e.d.runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.runtime.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: id, Stdout: true}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("attach to a stopped container: %v, want FailedPrecondition", err)
	}
}

// Input for a container that closed its stdin goes nowhere, and its
// monitor lives on (a write to the closed pipe must not kill it).
func TestAttachInputToClosedStdin(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "attach-closed")
	// It says it is alive for 10 s, not once after a fixed sleep: crictl
	// may take seconds to attach on a slow machine (an emulated guest).
	cfg := ctrConfig("closer", e.image("plain"), "sh", "-c", `exec 0<&-; i=0; while [ $i -lt 50 ]; do echo alive; sleep 0.2; i=$((i+1)); done`)
	cfg.Stdin = true
	id := e.run(t, podID, pod, cfg)
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := e.d.crictlCommand(ctx, "attach", "-i", id)
	cmd.Stdin = strings.NewReader(strings.Repeat("input nobody reads\n", 1000))
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "alive") {
		t.Errorf("crictl attach -i: %q, %v", out, err)
	}
	st := e.waitExited(t, id)
	if st.ExitCode != 0 || st.Reason != "Completed" {
		t.Errorf("exit %d, reason %q: the monitor did not see the end", st.ExitCode, st.Reason)
	}
}

// A container with a terminal gets one of its own devpts, owned by its
// user: `tty` names it.
func TestTerminalIsTheContainersOwn(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "own-tty")
	cfg := ctrConfig("tty", e.image("plain"), "sh", "-c", `tty; ls -ln "$(tty)"`)
	cfg.Tty = true
	cfg.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
	st, out := e.runToEnd(t, podID, pod, cfg)
	got := strings.ReplaceAll(strings.Join(out, "\n"), "\r", "")
	if st.ExitCode != 0 || !strings.HasPrefix(got, "/dev/pts/0\n") || !strings.Contains(got, " 1000 ") {
		t.Errorf("tty container: exit %d, output %q", st.ExitCode, got)
	}
	// A runtime that fails before it made the terminal (here, at a mount
	// into /proc) is reported, and its monitor does not wait for a
	// terminal forever.
	bad := ctrConfig("tty-badmount", e.image("plain"), "true")
	bad.Tty = true
	bad.Mounts = []*runtimeapi.Mount{{ContainerPath: "/proc/self/fd", HostPath: t.TempDir()}}
	id := e.create(t, podID, pod, bad)
	_, err := e.d.runtime.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: id})
	if err == nil || !strings.Contains(err.Error(), "/proc") {
		t.Errorf("starting with a mount into /proc and a terminal: %v", err)
	}
	if st := e.waitExited(t, id); st.Reason != "StartError" {
		t.Errorf("reason %q", st.Reason)
	}
	waitFor(t, func() bool {
		out, _ := exec.Command("pgrep", "-f", "^husk-runtime monitor --state "+filepath.Join(e.d.root, "containers", id)).Output()
		return len(out) == 0
	})
}
