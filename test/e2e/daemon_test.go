// Package e2e drives a real husk daemon over its socket, with gRPC and with
// crictl, the way kubelet and people do.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var (
	huskBin   string
	crictlBin string
	// cniBinDirs hold the standard plugins (built from the plugins module
	// by hack/install-cni-plugins.sh) and the test's slowcni.
	cniBinDirs []string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: these tests drive a real runtime and must run as root")
		return 1
	}
	tmp, err := os.MkdirTemp("", "husk-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	huskBin = filepath.Join(tmp, "husk")
	// husk-runtime next to husk, where the daemon looks for it.
	build := exec.Command("go", "build", "-o", tmp+"/", "github.com/husk-runtime/husk/cmd/husk", "github.com/husk-runtime/husk/cmd/husk-runtime")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building husk and husk-runtime:", err)
		return 1
	}
	plugins := os.Getenv("HUSK_CNI_BIN")
	if plugins == "" {
		plugins = "/opt/cni/bin"
	}
	install := exec.Command("sh", "../../hack/install-cni-plugins.sh", plugins)
	install.Stdout, install.Stderr = os.Stderr, os.Stderr
	if err := install.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the CNI plugins:", err)
		return 1
	}
	slow := exec.Command("go", "build", "-o", filepath.Join(tmp, "slowcni"), "github.com/husk-runtime/husk/test/e2e/slowcni")
	slow.Stdout, slow.Stderr = os.Stderr, os.Stderr
	if err := slow.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building slowcni:", err)
		return 1
	}
	// CRIU, for the checkpoint tests: built once into bin/, and found by
	// the daemon next to itself.
	criu := exec.Command("sh", "../../hack/install-criu.sh", "../../bin")
	criu.Stdout, criu.Stderr = os.Stderr, os.Stderr
	if err := criu.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building CRIU:", err)
		return 1
	}
	if abs, err := filepath.Abs("../../bin/criu"); err != nil || os.Symlink(abs, filepath.Join(tmp, "criu")) != nil {
		fmt.Fprintln(os.Stderr, "e2e: linking CRIU next to husk failed")
		return 1
	}
	cniBinDirs = []string{plugins, tmp}
	crictlBin, err = exec.LookPath("crictl")
	if err != nil {
		gopath, _ := exec.Command("go", "env", "GOPATH").Output()
		crictlBin = filepath.Join(strings.TrimSpace(string(gopath)), "bin", "crictl")
		if _, err := os.Stat(crictlBin); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: crictl not found; `make test` installs it")
			return 1
		}
	}
	return m.Run()
}

// daemon is one husk serve process with its own directories and socket.
type daemon struct {
	t       testing.TB
	dir     string
	root    string
	state   string
	sock    string
	config  string
	logPath string
	cmd     *exec.Cmd
	exited  chan error
	// extraArgs are added to `husk serve`'s flags.
	extraArgs []string

	conn    *grpc.ClientConn
	runtime runtimeapi.RuntimeServiceClient
	images  runtimeapi.ImageServiceClient
}

// newDaemon starts husk with config (TOML) written to its config file and
// extraArgs added to its flags.
func newDaemon(t testing.TB, config string, extraArgs ...string) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "husk-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	// As /var/lib and /run are: the root of a pod's user namespace, an
	// unprivileged user of the host, passes through to its own bundle.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	d := &daemon{
		t:       t,
		dir:     dir,
		root:    filepath.Join(dir, "root"),
		state:   filepath.Join(dir, "state"),
		sock:    filepath.Join(dir, "husk.sock"),
		config:  filepath.Join(dir, "config.toml"),
		logPath: filepath.Join(dir, "husk.log"),

		extraArgs: extraArgs,
	}
	if err := os.WriteFile(d.config, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(d.cniConfDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.removeAllPods()
		_ = d.stop(syscall.SIGKILL)
		unmountUnder(dir)
		if t.Failed() {
			b, _ := os.ReadFile(d.logPath)
			t.Logf("husk log:\n%s", b)
		}
		// HUSK_E2E_LOG keeps the daemon's log (--v 10: every step's
		// time), for profiling a benchmark.
		if keep := os.Getenv("HUSK_E2E_LOG"); keep != "" {
			if b, err := os.ReadFile(d.logPath); err == nil {
				_ = os.WriteFile(keep, b, 0o600)
			}
		}
		_ = os.RemoveAll(dir)
	})
	d.start()
	return d
}

func (d *daemon) args() []string {
	args := []string{"serve", "--config", d.config, "--root", d.root, "--state", d.state, "--listen", d.sock, "--v", "10", "--cni-conf-dir", d.cniConfDir()}
	for _, b := range cniBinDirs {
		args = append(args, "--cni-bin-dir", b)
	}
	// HUSK_E2E_CGROUP_DRIVER runs every daemon with that cgroup driver;
	// a test's own --cgroup-driver, later in the flags, wins.
	if driver := os.Getenv("HUSK_E2E_CGROUP_DRIVER"); driver != "" {
		args = append(args, "--cgroup-driver", driver)
	}
	return append(args, d.extraArgs...)
}

// cniConfDir starts empty: a test that wants pod networking writes a
// conflist there (husk picks it up without a restart).
func (d *daemon) cniConfDir() string { return filepath.Join(d.dir, "net.d") }

// removeAllPods is a test's last resort, so that a failed test does not
// leave namespaces, veths or processes on the machine.
func (d *daemon) removeAllPods() {
	if d.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := d.runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return
	}
	for _, p := range list.Items {
		_, _ = d.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
	}
}

// writeFile writes a test's file (a config, a manifest) or fails the test.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// unmountUnder lazily unmounts whatever a killed daemon left mounted in dir.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir) {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

// start runs the daemon and waits until it answers Version.
func (d *daemon) start() {
	d.t.Helper()
	if err := d.startProcess(); err != nil {
		d.t.Fatal(err)
	}
	d.connect()
}

func (d *daemon) startProcess() error {
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(huskBin, d.args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return err
	}
	_ = logf.Close()
	d.cmd = cmd
	d.exited = make(chan error, 1)
	go func() { d.exited <- cmd.Wait() }()
	return nil
}

func (d *daemon) connect() {
	d.t.Helper()
	// Generous: in the qemu (TCG) guest a daemon started while the kernel
	// still tears down the namespaces of the test before once took over
	// 20 s to answer (stop 24), and said nothing meanwhile.
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-d.exited:
			d.exited <- err
			b, _ := os.ReadFile(d.logPath)
			d.t.Fatalf("husk exited while starting: %v\n%s", err, b)
		default:
		}
		if _, err := os.Stat(d.sock); err == nil {
			conn, err := grpc.NewClient("unix://"+d.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				d.t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
			cancel()
			if err == nil {
				d.conn = conn
				d.runtime = runtimeapi.NewRuntimeServiceClient(conn)
				d.images = runtimeapi.NewImageServiceClient(conn)
				return
			}
			_ = conn.Close()
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("husk did not answer on %s", d.sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and waits for the process to end; it returns how it ended.
func (d *daemon) stop(sig syscall.Signal) error {
	if d.conn != nil {
		_ = d.conn.Close()
		d.conn = nil
	}
	if d.cmd == nil {
		return nil
	}
	_ = d.cmd.Process.Signal(sig)
	var err error
	select {
	case err = <-d.exited:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		err = <-d.exited
		d.t.Errorf("husk did not stop on %v within 30s", sig)
	}
	d.cmd = nil
	return err
}

func (d *daemon) restart() {
	d.t.Helper()
	if err := d.stop(syscall.SIGTERM); err != nil {
		d.t.Fatalf("husk exited with %v on SIGTERM", err)
	}
	d.start()
}

func (d *daemon) log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// crictlCommand is crictl against the daemon (its config written the
// first time), to run as the caller wants.
func (d *daemon) crictlCommand(ctx context.Context, args ...string) *exec.Cmd {
	d.t.Helper()
	cfg := filepath.Join(d.dir, "crictl.yaml")
	if _, err := os.Stat(cfg); err != nil {
		y := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", d.sock, d.sock)
		if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
			d.t.Fatal(err)
		}
	}
	return exec.CommandContext(ctx, crictlBin, append([]string{"--config", cfg}, args...)...)
}

// crictl runs crictl against the daemon and returns its standard output.
func (d *daemon) crictl(args ...string) (string, error) {
	cmd := d.crictlCommand(context.Background(), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (d *daemon) mustCrictl(args ...string) string {
	d.t.Helper()
	out, err := d.crictl(args...)
	if err != nil {
		d.t.Fatal(err)
	}
	return out
}

// insecureConfig lets the daemon pull from the test registries over plain HTTP.
func insecureConfig(hosts ...string) string {
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, "[registry.%q]\ninsecure = true\n", h)
	}
	return b.String()
}
