package e2e

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// The benchmarks in this file run the same CRI workloads against husk and
// against Debian's containerd (1.6, with runc and its runc v2 shim), both
// started here with their state in temporary directories, pulling from
// one registry on 127.0.0.1 and attaching pods to networks made of the
// same CNI plugins. `make bench-compare` installs containerd and runs
// them; docs/benchmarks.md keeps the figures.

// criTarget is one runtime under comparison.
type criTarget struct {
	name    string
	sock    string
	busybox string
	conn    *grpc.ClientConn
	rt      runtimeapi.RuntimeServiceClient
	// pid is the daemon's process.
	pid func() int
	// kill SIGKILLs the daemon; start starts it again without waiting.
	kill  func()
	start func()
}

// dial (re)connects to the target's socket; grpc connects lazily, so a
// call made while the daemon is down fails fast and the next one retries.
func (c *criTarget) dial(b *testing.B) {
	if c.conn != nil {
		_ = c.conn.Close()
	}
	// A short reconnect backoff: grpc's default waits a second after a
	// failed attempt, which would hide how soon a restarted daemon answers.
	conn, err := grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 5 * time.Millisecond, Multiplier: 1, MaxDelay: 5 * time.Millisecond}}),
		// kubelet's limit (its CRI client's maxMsgSize).
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		b.Fatal(err)
	}
	c.conn, c.rt = conn, runtimeapi.NewRuntimeServiceClient(conn)
}

// pauseSource is the sandbox image's program for containerd: like
// Kubernetes' pause, it sleeps, reaps what is reparented to it, and ends
// on SIGINT or SIGTERM. Built static here, so containerd's pods cost
// what they cost with the real pause image.
const pauseSource = `#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
	signal(SIGINT, quit);
	signal(SIGTERM, quit);
	signal(SIGCHLD, reap);
	for (;;) pause();
}
`

func pauseImage(b *testing.B) v1.Image { return staticCImage(b, "pause", pauseSource) }

// staticCImage is an image of one static C program, /NAME, its entrypoint,
// built from source with gcc.
func staticCImage(b testing.TB, name, source string) v1.Image {
	dir := b.TempDir()
	src := filepath.Join(dir, name+".c")
	if err := os.WriteFile(src, []byte(source), 0o600); err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	if out, err := exec.Command("gcc", "-static", "-O2", "-s", "-o", bin, src).CombinedOutput(); err != nil {
		b.Fatalf("building %s: %v\n%s", name, err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		b.Fatal(err)
	}
	return imagetest.Image(b, v1.Config{Entrypoint: []string{"/" + name}},
		imagetest.Layer(b, imagetest.Entry{Name: name, Mode: 0o755, Content: data}))
}

// compareNet is a /16 pod network, room for the scale benchmark's pods.
func compareNet(b *testing.B, dataDir string, second int) *podNet {
	n := &podNet{
		name:    "compare",
		bridge:  fmt.Sprintf("hkcmp%d", second),
		subnet:  fmt.Sprintf("10.%d.0.0/16", second),
		gateway: fmt.Sprintf("10.%d.0.1", second),
		dataDir: dataDir,
	}
	b.Cleanup(func() { _ = exec.Command("ip", "link", "del", n.bridge).Run() })
	return n
}

// compareCgroupRoot holds the pods' cgroups, made by the runtimes and
// removed when the benchmark ends.
const compareCgroupRoot = "/husk-compare"

// compareTargets starts husk and containerd, each with busybox pulled.
func compareTargets(b *testing.B) (*criTarget, *criTarget) {
	husk, ctrd, _ := compareEnv(b)
	return husk, ctrd
}

// compareEnv is compareTargets with the registry they pull from.
func compareEnv(b *testing.B) (*criTarget, *criTarget, *imagetest.Registry) {
	// Registered first, so it runs after the runtimes' cleanups.
	b.Cleanup(func() { removeCgroupTree(compareCgroupRoot) })
	if _, err := exec.LookPath("containerd"); err != nil {
		b.Fatal("containerd is not installed (make bench-compare installs Debian's)")
	}
	reg := imagetest.NewRegistry(b)
	reg.Push(b, "busybox:bench", imagetest.BusyboxImage(b, v1.Config{}))
	reg.Push(b, "pause:bench", pauseImage(b))
	ref := reg.Ref("busybox:bench")

	// --v 2, as containerd logs at info: husk's e2e daemons log every step.
	d := newDaemon(b, insecureConfig(reg.Host), "--v", "2")
	n := compareNet(b, filepath.Join(d.dir, "cni-data"), 210)
	n.install(b, d)
	husk := &criTarget{name: "husk", sock: d.sock, busybox: ref,
		pid:   func() int { return d.cmd.Process.Pid },
		kill:  func() { _ = d.stop(syscall.SIGKILL) },
		start: func() { _ = d.startProcess() },
	}
	husk.dial(b)
	// Before the daemon's own cleanup, which gives up after 30 s: 250
	// pods take longer to remove.
	b.Cleanup(func() { removePods(husk) })
	ctrd := startContainerd(b, reg)
	ctrd.busybox = ref
	for _, t := range []*criTarget{husk, ctrd} {
		img := runtimeapi.NewImageServiceClient(t.conn)
		if _, err := img.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			b.Fatalf("%s: pulling busybox: %v", t.name, err)
		}
	}
	return husk, ctrd, reg
}

const containerdConfig = `version = 2
root = %[1]q
state = %[2]q
[grpc]
address = %[3]q
[plugins."io.containerd.grpc.v1.cri"]
sandbox_image = %[4]q
# Root here cannot lower oom_score_adj below its own (no CAP_SYS_RESOURCE).
restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".cni]
bin_dir = %[5]q
conf_dir = %[6]q
[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".registry.mirrors.%[7]q]
endpoint = ["http://%[7]s"]
`

// startContainerd starts Debian's containerd with its CRI plugin on a
// network like husk's. Its shims outlive it; the cleanup removes its pods
// and then kills whatever is left.
func startContainerd(b *testing.B, reg *imagetest.Registry) *criTarget {
	dir := b.TempDir()
	confDir := filepath.Join(dir, "cni")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		b.Fatal(err)
	}
	n := compareNet(b, filepath.Join(dir, "cni-data"), 211)
	if err := os.WriteFile(filepath.Join(confDir, "10-compare.conflist"), []byte(n.conflist()), 0o644); err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	config := filepath.Join(dir, "config.toml")
	content := fmt.Sprintf(containerdConfig, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock,
		reg.Ref("pause:bench"), cniBinDirs[0], confDir, reg.Host)
	if err := os.WriteFile(config, []byte(content), 0o600); err != nil {
		b.Fatal(err)
	}
	logPath := filepath.Join(dir, "containerd.log")
	var cmd *exec.Cmd
	start := func() {
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = logf.Close() }()
		cmd = exec.Command("containerd", "--config", config)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
	}
	kill := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	start()
	t := &criTarget{name: "containerd", sock: sock, pid: func() int { return cmd.Process.Pid }, kill: kill, start: start}
	t.dial(b)
	b.Cleanup(func() {
		removePods(t)
		kill()
		_ = exec.Command("pkill", "-9", "-f", "containerd-shim-runc-v2 -namespace k8s.io -id .* -address "+sock).Run()
		unmountUnder(dir)
		if b.Failed() {
			data, _ := os.ReadFile(logPath)
			lines := strings.Split(string(data), "\n")
			b.Logf("containerd log (last 40 lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	waitAnswer(b, t)
	return t
}

// waitAnswer waits until the target answers ListPodSandbox and returns
// how long that took.
func waitAnswer(b *testing.B, t *criTarget) time.Duration {
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := t.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		cancel()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > 2*time.Minute {
			b.Fatalf("%s does not answer: %v", t.name, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func removePods(t *criTarget) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	list, err := t.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return
	}
	for _, p := range list.Items {
		_, _ = t.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
		_, _ = t.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
	}
}

// comparePod is a pod of busybox `sleep` containers, as kubelet asks for
// it: with a cgroup parent, a log directory, and the PID namespace pid.
type comparePod struct {
	id  string
	cfg *runtimeapi.PodSandboxConfig
	// took is RunPodSandbox's, CreateContainer's and StartContainer's
	// time (the last two for the first container).
	run, create, start time.Duration
	containers         []string
}

func newComparePod(b *testing.B, t *criTarget, name string, pid runtimeapi.NamespaceMode, containers int) *comparePod {
	p, err := makeComparePod(b.TempDir(), t, name, pid, containers)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// makeComparePod is newComparePod for a goroutine of the benchmark's,
// which must not call Fatal: it returns the error instead.
func makeComparePod(logDir string, t *criTarget, name string, pid runtimeapi.NamespaceMode, containers int) (*comparePod, error) {
	ctx := context.Background()
	cfg := podConfig(name)
	cfg.LogDirectory = filepath.Join(logDir, "logs")
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = pid
	// As kubelet's cgroupfs driver names it; containerd has no pod stats
	// without it.
	cfg.Linux.CgroupParent = compareCgroupRoot + "/pod" + cfg.Metadata.Uid
	p := &comparePod{cfg: cfg}
	t0 := time.Now()
	resp, err := t.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return nil, fmt.Errorf("%s: RunPodSandbox %s: %w", t.name, name, err)
	}
	p.id, p.run = resp.PodSandboxId, time.Since(t0)
	for i := range containers {
		t1 := time.Now()
		c, err := t.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.id, SandboxConfig: cfg, Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("c%d", i)},
			Image:    &runtimeapi.ImageSpec{Image: t.busybox},
			Command:  []string{"sleep", "100000"},
			LogPath:  fmt.Sprintf("c%d.log", i),
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: pid},
			}},
		}})
		if err != nil {
			return nil, fmt.Errorf("%s: CreateContainer in %s: %w", t.name, name, err)
		}
		t2 := time.Now()
		if _, err := t.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			return nil, fmt.Errorf("%s: StartContainer in %s: %w", t.name, name, err)
		}
		if i == 0 {
			p.create, p.start = t2.Sub(t1), time.Since(t2)
		}
		p.containers = append(p.containers, c.ContainerId)
	}
	return p, nil
}

// stop and remove the pod, returning each call's time.
func (p *comparePod) remove(b *testing.B, t *criTarget) (time.Duration, time.Duration) {
	ctx := context.Background()
	t0 := time.Now()
	if _, err := t.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.id}); err != nil {
		b.Fatalf("%s: StopPodSandbox: %v", t.name, err)
	}
	t1 := time.Now()
	if _, err := t.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.id}); err != nil {
		b.Fatalf("%s: RemovePodSandbox: %v", t.name, err)
	}
	return t1.Sub(t0), time.Since(t1)
}

// podsByWorkers makes n pods by `workers` callers at once and returns
// them with the time it took.
func podsByWorkers(b *testing.B, t *criTarget, prefix string, n, workers, containers int) ([]*comparePod, time.Duration) {
	var mu sync.Mutex
	var pods []*comparePod
	var failed error
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				p, err := makeComparePod(b.TempDir(), t, fmt.Sprintf("%s-%d", prefix, j), runtimeapi.NamespaceMode_CONTAINER, containers)
				mu.Lock()
				if err != nil {
					failed = cmp.Or(failed, err)
				} else {
					pods = append(pods, p)
				}
				mu.Unlock()
			}
		})
	}
	for j := range n {
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	if failed != nil {
		// The pods made go with the benchmark's cleanup (removePods).
		b.Fatal(failed)
	}
	return pods, time.Since(start)
}

func removeComparePods(b *testing.B, t *criTarget, pods []*comparePod) {
	for _, p := range pods {
		p.remove(b, t)
	}
}

// procSnapshot is the set of processes running now.
func procSnapshot() map[int]bool {
	set := map[int]bool{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			set[pid] = true
		}
	}
	return set
}

// procKiB reads a "Name: N kB" field of a /proc file (status,
// smaps_rollup); 0 for a process that is gone or a field it lacks.
func procKiB(pid int, file, field string) float64 {
	v, _ := procField(pid, file, field)
	return v
}

// procField reads a "Name: N ..." field of /proc/PID/FILE.
func procField(pid int, file, field string) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/%s", field, pid, file)
}

// helperMemory adds up the RSS and PSS of the processes started since
// before that are not the pods' own `sleep`: monitors and pod inits for
// husk, shims and pause for containerd.
func helperMemory(before map[int]bool) (rss, pss float64, n int) {
	for pid := range procSnapshot() {
		if before[pid] {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) == "sleep" {
			continue
		}
		rss += procKiB(pid, "status", "VmRSS")
		pss += procKiB(pid, "smaps_rollup", "Pss")
		n++
	}
	return rss, pss, n
}

// cpuTicks is a process's user and system time in clock ticks.
func cpuTicks(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command, which may hold spaces, in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// compareReport writes a table to stdout and, when HUSK_BENCH_OUT names a
// directory, to a file there.
func compareReport(b *testing.B, file, text string) {
	fmt.Print(text)
	if dir := os.Getenv("HUSK_BENCH_OUT"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(text), 0o644); err != nil {
			b.Error(err)
		}
	}
}
