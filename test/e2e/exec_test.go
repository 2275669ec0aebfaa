package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/oci/runtime/cgroups"
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

	// The container's exec profile makes the process; a container made
	// before profiles has none, and exec-init makes it.
	profile := filepath.Join(e.d.state, "containers", id, "exec.profile")
	if _, err := os.Stat(profile); err != nil {
		t.Errorf("no exec profile: %v", err)
	}
	check := func(how string) {
		t.Helper()
		resp, err := e.exec(t, id, 10, "sh", "-c", "id -u; echo $FROM_SPEC; pwd; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc/self/fd | tr '\\n' ' '; echo oops >&2; exit 3")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(resp.Stdout)), "\n")
		if resp.ExitCode != 3 || len(lines) != 5 || lines[0] != "1000" || lines[1] != "yes" || lines[2] != "/tmp" ||
			!strings.HasPrefix(lines[3], "sleep 300") || strings.TrimSpace(lines[4]) != "0 1 2 3" || string(resp.Stderr) != "oops\n" {
			t.Errorf("exec through %s: exit %d stdout %q stderr %q", how, resp.ExitCode, resp.Stdout, resp.Stderr)
		}
		// A command not in the container.
		resp, err = e.exec(t, id, 10, "no-such-command")
		if err != nil || resp.ExitCode != 127 || !strings.Contains(string(resp.Stderr), "no-such-command") {
			t.Errorf("missing command through %s: %v, %v", how, resp, err)
		}
	}
	check("the profile")
	// A timeout kills the command.
	start := time.Now()
	_, err := e.exec(t, id, 1, "sh", "-c", "sleep 77")
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
	if err := os.Remove(profile); err != nil {
		t.Fatal(err)
	}
	check("exec-init")
}

// crictl exec without --sync streams through husk's streaming server, as
// kubectl exec does; crictl port-forward reaches a port in the pod.
func TestStreamingExecAndPortForward(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "stream")
	id := e.run(t, podID, pod, ctrConfig("target", e.image("plain"), "sleep", "300"))
	out, err := e.d.crictl("exec", id, "sh", "-c", "echo streamed; echo to-stderr >&2")
	if err != nil || strings.TrimSpace(out) != "streamed" {
		t.Errorf("crictl exec: %q, %v", out, err)
	}
	if _, err := e.d.crictl("exec", id, "sh", "-c", "exit 5"); err == nil || !strings.Contains(err.Error(), "exit code 5") {
		t.Errorf("crictl exec of a failing command: %v", err)
	}
	// stdin.
	cmd := e.d.crictlCommand(t.Context(), "exec", "-i", id, "cat")
	cmd.Stdin = strings.NewReader("from stdin\n")
	if b, err := cmd.Output(); err != nil || string(b) != "from stdin\n" {
		t.Errorf("crictl exec -i: %q, %v", b, err)
	}

	_, info := podStatus(t, e.d, podID)
	listenIn(t, info.Namespaces["net"], "127.0.0.1:8088", "through port-forward")
	local := 40000 + rand.IntN(10000)
	pf := e.d.crictlCommand(context.Background(), "port-forward", podID, fmt.Sprintf("%d:8088", local))
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pf.Process.Kill(); _ = pf.Wait() })
	var got string
	waitFor(t, func() bool {
		got, err = readFrom(fmt.Sprintf("127.0.0.1:%d", local))
		return err == nil
	})
	if got != "through port-forward" {
		t.Errorf("port-forward read %q", got)
	}
}

// An exec with a terminal (crictl exec -it, kubectl exec -it): the command
// runs on a terminal of its own.
func TestStreamingExecWithTerminal(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "tty")
	cfg := ctrConfig("target", e.image("plain"), "sleep", "300")
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxContainerConfig{}
	}
	if cfg.Linux.SecurityContext == nil {
		cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{}
	}
	cfg.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
	id := e.run(t, podID, pod, cfg)
	out, err := crictlOnTerminal(t, e, 41, 123, "exec", "-it", id, "sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo on-a-terminal; echo \"name=$(tty)\"; ls -ln \"$(tty)\"; ls /dev/pts; stty size")
	if err != nil {
		t.Errorf("crictl exec -it: %v", err)
	}
	// The terminal is one of the container's own devpts: `tty` names it,
	// it is there in the container's /dev/pts, and it is the user's.
	t.Logf("crictl exec -it printed: %q", out)
	if !strings.Contains(out, "on-a-terminal") || !strings.Contains(out, "name=/dev/pts/0") || !strings.Contains(out, "41 123") {
		t.Errorf("exec -it in the container: %q", out)
	}
	if !regexp.MustCompile(`crw--w---- +1 +1000 +5 +136, +0 .*/dev/pts/0`).MatchString(out) {
		t.Errorf("the terminal is not the container user's (uid 1000, group tty): %q", out)
	}
	// A command that is not there: said on the terminal, exit code 127.
	out, err = crictlOnTerminal(t, e, 24, 80, "exec", "-it", id, "no-such-command")
	if err == nil || !strings.Contains(err.Error(), "exit status") || !strings.Contains(out, "no-such-command") {
		t.Errorf("crictl exec -it of a missing command: %v, %q", err, out)
	}
	if !strings.Contains(out, "127") {
		t.Errorf("crictl exec -it of a missing command does not report exit code 127: %q", out)
	}
}

// crictlOnTerminal runs crictl with a pseudo-terminal of the host (rows x
// cols) as its stdin, stdout and stderr, and returns what it wrote there.
func crictlOnTerminal(t *testing.T, e *ctrEnv, rows, cols uint16, args ...string) (string, error) {
	return crictlTyping(t, e, rows, cols, "", args...)
}

// crictlTyping is crictlOnTerminal that types input on the terminal half a
// second after crictl started (once its session is up).
func crictlTyping(t *testing.T, e *ctrEnv, rows, cols uint16, input string, args ...string) (string, error) {
	t.Helper()
	return onTerminal(t, e.d.crictlCommand(context.Background(), args...), rows, cols, input)
}

// onTerminal runs cmd with a pseudo-terminal of the host (rows x cols) as
// its stdin, stdout and stderr, types input there half a second after it
// started (unless input is empty), and returns what cmd wrote there.
func onTerminal(t testing.TB, cmd *exec.Cmd, rows, cols uint16, input string) (string, error) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = master.Close() }()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = slave.Close()
	var got strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	if input != "" {
		time.Sleep(500 * time.Millisecond)
		if _, err := master.Write([]byte(input)); err != nil {
			t.Fatal(err)
		}
	}
	werr := cmd.Wait()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	return got.String(), werr
}

// What exec starts is a process of the container as its first process is:
// the same user and groups, capability sets, no_new_privs, seccomp
// filter, resource limits and oom_score_adj, whether the exec profile or
// exec-init made it.
func TestExecProcessIsLikeTheContainers(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "exec-like")
	root := ctrConfig("root", e.image("plain"), "sleep", "300")
	root.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	user := ctrConfig("user", e.image("plain"), "sleep", "300")
	user.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
	user.Linux.SecurityContext.SupplementalGroups = []int64{4, 5}
	user.Linux.SecurityContext.NoNewPrivs = true
	user.Linux.SecurityContext.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"NET_RAW"}, DropCapabilities: []string{"CHOWN"}}
	user.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	// Not the daemon's: a kubelet gives its runtime -999.
	user.Linux.Resources = &runtimeapi.LinuxContainerResources{OomScoreAdj: 700}
	for _, cfg := range []*runtimeapi.ContainerConfig{root, user} {
		id := e.run(t, podID, pod, cfg)
		for _, how := range []string{"the profile", "exec-init"} {
			if how == "exec-init" {
				if err := os.Remove(filepath.Join(e.d.state, "containers", id, "exec.profile")); err != nil {
					t.Fatal(err)
				}
			}
			out := execIsLikeFirst(t, e, id, cfg.Metadata.Name+", exec through "+how)
			if cfg == user && !strings.Contains(out, "oom_score_adj: 700\n") {
				t.Errorf("%s, exec through %s: the container's oom_score_adj is not 700:\n%s", cfg.Metadata.Name, how, out)
			}
			// The default filter refuses a user namespace, which the
			// kernel allows without a capability.
			if r, err := e.exec(t, id, 10, "unshare", "-U", "true"); err != nil || r.ExitCode == 0 {
				t.Errorf("%s, exec through %s: unshare -U under the default seccomp filter: %v, %v", cfg.Metadata.Name, how, r, err)
			}
		}
	}
}

// execIsLikeFirst compares an exec'd process of the container id with
// its first process (PID 1 of its PID namespace): user, groups,
// capabilities, no_new_privs, seccomp, resource limits and
// oom_score_adj. It returns what the first process showed.
func execIsLikeFirst(t *testing.T, e *ctrEnv, id, what string) string {
	t.Helper()
	const show = "cat /proc/%[1]s/status /proc/%[1]s/limits; echo oom_score_adj: $(cat /proc/%[1]s/oom_score_adj)"
	resp, err := e.exec(t, id, 10, "sh", "-c", fmt.Sprintf(show, "1")+"; echo ==; "+fmt.Sprintf(show, "self"))
	if err != nil || resp.ExitCode != 0 {
		t.Fatalf("%s: %v, %v", what, resp, err)
	}
	fields := regexp.MustCompile(`(?m)^((Uid|Gid|Groups|Cap\w+|NoNewPrivs|Seccomp\w*|oom_score_adj):|Max ).*$`)
	first, exec, _ := strings.Cut(string(resp.Stdout), "==\n")
	want, got := fields.FindAllString(first, -1), fields.FindAllString(exec, -1)
	if len(want) < 20 || strings.Join(want, "\n") != strings.Join(got, "\n") {
		t.Errorf("%s:\nthe container's first process:\n%s\nthe exec'd one:\n%s", what, strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
	return strings.Join(want, "\n") + "\n"
}

// execServers are the pids of the daemon's `husk-runtime exec-server`s.
func execServers(d *daemon) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if string(cmdline) == "husk-runtime\x00exec-server\x00" && strings.Contains(string(st), fmt.Sprintf("\nPPid:\t%d\n", d.cmd.Process.Pid)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// freeze freezes or thaws a container's cgroup, with the freezer a
// checkpoint uses.
func freeze(t *testing.T, d *daemon, id string, frozen bool) {
	t.Helper()
	m, err := cgroups.New(cgroups.Cgroupfs)
	if err != nil {
		t.Fatal(err)
	}
	cg := containerCgroup(t, d, id)
	if frozen {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = m.Freeze(ctx, cg)
	} else {
		err = m.Thaw(cg)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// ExecSync's commands come from one long-lived exec server, the
// daemon's child: started on the first exec, started again when it died,
// gone with the daemon. Execs into containers of different
// oom_score_adj at once each get their container's, and the server keeps
// its own. A command that cannot start (its container frozen) holds up
// no other container's exec, and its exec ends at its deadline.
func TestExecServer(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "exec-server")
	adj := map[string]string{}
	var ids []string
	for name, value := range map[string]int64{"a": 300, "b": 700} {
		cfg := ctrConfig(name, e.image("plain"), "sleep", "300")
		cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{OomScoreAdj: value}
		id := e.run(t, podID, pod, cfg)
		adj[id] = fmt.Sprint(value)
		ids = append(ids, id)
	}
	a, b := ids[0], ids[1]
	echo := func(id, word string) {
		t.Helper()
		resp, err := e.exec(t, id, 10, "echo", word)
		if err != nil || resp.ExitCode != 0 || string(resp.Stdout) != word+"\n" {
			t.Fatalf("echo %s in %s: %v, %v", word, id, resp, err)
		}
	}
	echo(a, "one")
	servers := execServers(e.d)
	if len(servers) != 1 {
		t.Fatalf("exec servers after an exec: %v, want one", servers)
	}
	echo(b, "two")
	if again := execServers(e.d); !slices.Equal(again, servers) {
		t.Errorf("exec servers after a second exec: %v, want %v", again, servers)
	}

	own, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", e.d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 40 {
		id := ids[i%2]
		wg.Go(func() {
			resp, err := e.exec(t, id, 10, "cat", "/proc/self/oom_score_adj")
			if err != nil || strings.TrimSpace(string(resp.GetStdout())) != adj[id] {
				t.Errorf("exec %d: oom_score_adj %q, %v; want its container's %s", i, resp.GetStdout(), err, adj[id])
			}
		})
	}
	wg.Wait()
	if got, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", servers[0])); string(got) != string(own) {
		t.Errorf("the exec server's oom_score_adj after the execs: %q, want the daemon's %q", got, own)
	}

	// A profile of an older layout (a container made before an
	// upgrade): the exec goes another way.
	profile := filepath.Join(e.d.state, "containers", b, "exec.profile")
	old, err := os.ReadFile(profile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, profile, "HUSKEXP1"+string(old[8:]))
	echo(b, "old-profile")
	writeFile(t, profile, string(old))

	// One that died is replaced.
	if err := syscall.Kill(servers[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := os.Stat(fmt.Sprintf("/proc/%d", servers[0])); return err != nil })
	echo(a, "three")
	if now := execServers(e.d); len(now) != 1 || now[0] == servers[0] {
		t.Errorf("exec servers after the first was killed: %v", now)
	}

	// a frozen: its exec cannot start, b's goes on.
	freeze(t, e.d, a, true)
	thawed := false
	defer func() {
		if !thawed {
			freeze(t, e.d, a, false)
		}
	}()
	stuck := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := e.exec(t, a, 2, "echo", "frozen")
		stuck <- err
	}()
	time.Sleep(200 * time.Millisecond)
	echo(b, "four")
	if err := <-stuck; status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 10*time.Second {
		t.Errorf("exec in a frozen container: %v after %v, want DeadlineExceeded", err, time.Since(start))
	}
	echo(b, "five")
	freeze(t, e.d, a, false)
	thawed = true
	echo(a, "six")

	// With the daemon, the server ends.
	last := execServers(e.d)
	if err := e.d.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		for _, pid := range last {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				return false
			}
		}
		return true
	})
	e.d.start()
}
