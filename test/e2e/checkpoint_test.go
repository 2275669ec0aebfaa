package e2e

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// counterScript counts up ten times a second, printing each number and
// keeping it in its writable layer; it also writes a file and deletes one
// of the image's, which a restore must carry over.
const counterScript = `echo made > /made-here; rm /bin/yes; i=0; while true; do i=$((i+1)); echo $i; echo $i > /count; sleep 0.1; done`

// lastNumber is the last number a counter printed.
func lastNumber(t *testing.T, logPath string) int {
	t.Helper()
	out := output(t, logPath, "stdout")
	if len(out) == 0 {
		return 0
	}
	n, err := strconv.Atoi(out[len(out)-1])
	if err != nil {
		t.Fatalf("counter printed %q", out[len(out)-1])
	}
	return n
}

// checkpointCounter runs a counter in a pod and checkpoints it once it
// counted to 5; from and to are what it had printed just before and just
// after.
func (e *ctrEnv) checkpointCounter(t *testing.T, podID string, pod *runtimeapi.PodSandboxConfig) (id, archive string, from, to int) {
	t.Helper()
	id = e.run(t, podID, pod, ctrConfig("counter", e.image("plain"), "sh", "-c", counterScript))
	log := e.status(t, id).LogPath
	waitFor(t, func() bool { return lastNumber(t, log) >= 5 })
	archive = filepath.Join(t.TempDir(), "counter.tar")
	from = lastNumber(t, log)
	if err := e.checkpoint(id, archive); err != nil {
		t.Fatalf("CheckpointContainer: %v", err)
	}
	return id, archive, from, lastNumber(t, log)
}

// restoreCounter restores checkpointCounter's archive in a pod and checks
// that the counter goes on from where it was; it returns the container
// and the first number it printed.
func (e *ctrEnv) restoreCounter(t *testing.T, podID string, pod *runtimeapi.PodSandboxConfig, archive string, from, to int) (string, int) {
	t.Helper()
	id := e.create(t, podID, pod, &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "counter"},
		Image:    &runtimeapi.ImageSpec{Image: archive},
		LogPath:  "restored.log",
	})
	e.start(t, id)
	log := e.status(t, id).LogPath
	waitFor(t, func() bool { return len(output(t, log, "stdout")) >= 3 })
	out := output(t, log, "stdout")
	first, err := strconv.Atoi(out[0])
	if err != nil || first <= from || first > to+1 {
		t.Fatalf("restored counter printed first %q; it was at %d to %d when checkpointed", out[0], from, to)
	}
	checkRestoredInPod(t, e.d, podID)
	return id, first
}

// checkRestoredInPod: the restored processes are in the new pod's cgroup
// (its stats count them), not the checkpointed container's.
func checkRestoredInPod(t *testing.T, d *daemon, podID string) {
	t.Helper()
	ps, err := d.runtime.PodSandboxStats(context.Background(), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID})
	if err != nil || ps.Stats.GetLinux().GetProcess().GetProcessCount().GetValue() == 0 {
		t.Errorf("the restored pod's cgroup has no process: %v, %v", ps.GetStats().GetLinux().GetProcess(), err)
	}
}

func (e *ctrEnv) checkpoint(id, location string) error {
	_, err := e.d.runtime.CheckpointContainer(context.Background(), &runtimeapi.CheckpointContainerRequest{ContainerId: id, Location: location, Timeout: 60})
	return err
}

// TestCheckpointAndRestoreCounter checkpoints a running counter, which
// goes on, and restores it in another pod: it goes on from where it was
// checkpointed, with its writable layer, in the new pod's namespaces.
func TestCheckpointAndRestoreCounter(t *testing.T) {
	e := newCtrEnv(t)
	before := countContainerLeaks(t, e.d)
	podA, podCfgA := e.pod(t, "ckpt-a")
	id, archive, from, to := e.checkpointCounter(t, podA, podCfgA)
	logA := e.status(t, id).LogPath
	checkArchiveLayout(t, archive, "counter", "ckpt-a")
	// The original goes on.
	waitFor(t, func() bool { return lastNumber(t, logA) > to+3 })
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("checkpointed container is %s, want running", st.State)
	}

	podB, podCfgB := e.pod(t, "ckpt-b")
	restored, first := e.restoreCounter(t, podB, podCfgB, archive, from, to)
	resp, err := e.exec(t, restored, 10, "sh", "-c", "cat /made-here; test -e /bin/yes && echo yes-is-back; hostname; cat /count")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(resp.Stdout))
	if len(lines) != 3 || lines[0] != "made" || lines[1] != "ckpt-b" {
		t.Fatalf("in the restored container: %q (stderr %q), want the file it made, no /bin/yes, the new pod's hostname and its count", resp.Stdout, resp.Stderr)
	}
	if n, _ := strconv.Atoi(lines[2]); n < first {
		t.Errorf("count in the restored writable layer %q, below the first number printed %d", lines[2], first)
	}
	t.Logf("checkpointed at %d-%d, restored counter went on at %d", from, to, first)
	// Attach reaches the restored process's output through its new
	// monitor.
	line, err := firstLine(e.d.crictlCommand(context.Background(), "attach", restored), 20*time.Second)
	if n, _ := strconv.Atoi(strings.TrimSpace(line)); err != nil || n <= first {
		t.Errorf("crictl attach to the restored counter: %q, %v", line, err)
	}

	// The same checkpoint as an image, pulled from a registry: restored
	// from its layer.
	ref := checkpointImage(t, e, archive)
	podC, podCfgC := e.pod(t, "ckpt-c")
	if _, again := e.restoreCounter(t, podC, podCfgC, ref, from, to); again != first {
		t.Errorf("restored from the checkpoint image, the counter printed first %d, want %d as from the archive", again, first)
	}

	// A stopped container cannot be checkpointed.
	if _, err := e.d.runtime.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.checkpoint(id, filepath.Join(t.TempDir(), "stopped.tar")); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("checkpoint of a stopped container: %v, want FailedPrecondition", err)
	}
	for _, p := range []string{podA, podB, podC} {
		stopPod(t, e.d, p)
		removePod(t, e.d, p)
	}
	if after := countContainerLeaks(t, e.d); after != before {
		t.Errorf("checkpoint and restore left something behind:\nbefore %+v\nafter  %+v", before, after)
	}
	if out, _ := exec.Command("pgrep", "-x", "criu").Output(); len(out) > 0 {
		t.Errorf("criu processes left: %s", out)
	}
}

// checkpointImage makes an image of a checkpoint archive, as `checkpointctl
// build` and CRI-O do (one layer, the archive's content, and CRI-O's
// annotation), pushes it and has husk pull it.
func checkpointImage(t *testing.T, e *ctrEnv, archive string) string {
	t.Helper()
	layer, err := tarball.LayerFromFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH, RootFS: v1.RootFS{Type: "layers", DiffIDs: mustDiffIDs(t, img)}})
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.Annotations(img, map[string]string{"io.kubernetes.cri-o.annotations.checkpoint.name": "counter"}).(v1.Image)
	e.reg.Push(t, "checkpoint:counter", img)
	ref := e.reg.Ref("checkpoint:counter")
	pullImage(t, e.d, ref)
	return ref
}

func mustDiffIDs(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.RootFS.DiffIDs
}

// checkArchiveLayout checks what checkpointctl needs of an archive: the
// images directory as an entry of its own, config.dump and spec.dump
// naming the container and its pod.
func checkArchiveLayout(t testing.TB, archive, name, pod string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for first := true; ; first = false {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		// First: a restore reads no further to find it.
		if first && h.Name != "husk.dump" {
			t.Errorf("the archive starts with %s, not husk.dump", h.Name)
		}
		names[strings.TrimSuffix(filepath.Clean(h.Name), "/")] = true
		if h.Name == "spec.dump" {
			var spec struct{ Annotations map[string]string }
			if err := json.NewDecoder(tr).Decode(&spec); err != nil || spec.Annotations["io.kubernetes.cri.container-name"] != name || spec.Annotations["io.kubernetes.cri.sandbox-name"] != pod {
				t.Errorf("spec.dump's annotations (checkpointctl's names): %v, %v", spec.Annotations, err)
			}
		}
		if h.Name == "config.dump" {
			var cfg struct {
				ID, Name, RootfsImageName string
			}
			if err := json.NewDecoder(tr).Decode(&cfg); err != nil || cfg.ID == "" || cfg.Name != name || cfg.RootfsImageName == "" {
				t.Errorf("config.dump: %+v, %v", cfg, err)
			}
		}
	}
	for _, want := range []string{"checkpoint", "checkpoint/inventory.img", "checkpoint/pstree.img", "config.dump", "spec.dump", "rootfs-diff.tar", "husk.dump", "stats-dump", "container.log"} {
		if !names[want] {
			t.Errorf("archive has no %s; it has %v", want, names)
		}
	}
}

// TestRestoreRefusesBadArchives: a missing archive and one that is not a
// checkpoint are refused, and nothing is made.
func TestRestoreRefusesBadArchives(t *testing.T) {
	e := newCtrEnv(t)
	podID, podCfg := e.pod(t, "ckpt-bad")
	before := countContainerLeaks(t, e.d)
	garbage := filepath.Join(t.TempDir(), "garbage.tar")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a tar\n", 200)), 0o600); err != nil {
		t.Fatal(err)
	}
	for archive, want := range map[string]codes.Code{
		filepath.Join(t.TempDir(), "missing.tar"): codes.NotFound,
		garbage: codes.InvalidArgument,
	} {
		cfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "restored"}, Image: &runtimeapi.ImageSpec{Image: archive}}
		_, err := e.d.runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
		if status.Code(err) != want {
			t.Errorf("restore from %s: %v, want %s", filepath.Base(archive), err, want)
		}
	}
	list, err := e.d.runtime.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{})
	if err != nil || len(list.Containers) != 0 {
		t.Errorf("after refused restores: %v, %v", list, err)
	}
	if after := countContainerLeaks(t, e.d); after != before {
		t.Errorf("refused restores left something behind:\nbefore %+v\nafter  %+v", before, after)
	}
	if _, err := e.d.runtime.CheckpointContainer(context.Background(), &runtimeapi.CheckpointContainerRequest{ContainerId: "nope", Location: "relative.tar"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("checkpoint to a relative location: %v, want InvalidArgument", err)
	}
}

// TestCheckpointAndRestoreServer checkpoints a small TCP server that
// counts its clients in memory: the restored one listens in the new pod's
// network and goes on counting from the checkpoint. Stopping it records
// its exit, as for any container.
func TestCheckpointAndRestoreServer(t *testing.T) {
	e := newCtrEnv(t)
	podA, podCfgA := e.pod(t, "srv-a")
	id := e.run(t, podA, podCfgA, ctrConfig("server", e.image("plain"), "sh", "-c",
		`i=0; while true; do i=$((i+1)); echo "hits $i" | nc -l -p 8080; done`))
	ipA, _ := podStatus(t, e.d, podA)
	hit := func(ip string) string {
		var got string
		waitFor(t, func() bool {
			var err error
			got, err = readFrom(ip + ":8080")
			return err == nil && got != ""
		})
		return strings.TrimSpace(got)
	}
	for i := 1; i <= 3; i++ {
		if got := hit(ipA.GetNetwork().GetIp()); got != "hits "+strconv.Itoa(i) {
			t.Fatalf("request %d: %q", i, got)
		}
	}
	archive := filepath.Join(t.TempDir(), "server.tar")
	if err := e.checkpoint(id, archive); err != nil {
		t.Fatalf("CheckpointContainer: %v", err)
	}
	if got := hit(ipA.GetNetwork().GetIp()); got != "hits 4" {
		t.Errorf("the checkpointed server after the checkpoint: %q, want hits 4", got)
	}

	podB, podCfgB := e.pod(t, "srv-b")
	restored := e.create(t, podB, podCfgB, &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "server"},
		Image:    &runtimeapi.ImageSpec{Image: archive},
		LogPath:  "restored.log",
	})
	e.start(t, restored)
	ipB, _ := podStatus(t, e.d, podB)
	if ipB.GetNetwork().GetIp() == ipA.GetNetwork().GetIp() {
		t.Fatalf("both pods have IP %s", ipA.GetNetwork().GetIp())
	}
	for i := 4; i <= 5; i++ {
		if got := hit(ipB.GetNetwork().GetIp()); got != "hits "+strconv.Itoa(i) {
			t.Fatalf("restored server, request %d: %q", i, got)
		}
	}
	if _, err := e.d.runtime.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: restored, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	st := e.status(t, restored)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode == 0 || st.FinishedAt == 0 {
		t.Errorf("stopped restored container: %s, exit %d, finished %d", st.State, st.ExitCode, st.FinishedAt)
	}
}

// TestCheckpointRefusesATerminal: CRIU cannot take a terminal from the
// monitor; the refusal says so and leaves nothing.
func TestCheckpointRefusesATerminal(t *testing.T) {
	e := newCtrEnv(t)
	podID, podCfg := e.pod(t, "ckpt-tty")
	cfg := ctrConfig("tty", e.image("plain"), "sleep", "300")
	cfg.Tty = true
	id := e.run(t, podID, podCfg, cfg)
	dir := t.TempDir()
	err := e.checkpoint(id, filepath.Join(dir, "tty.tar"))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "terminal") {
		t.Errorf("checkpoint of a container with a terminal: %v, want FailedPrecondition naming it", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a refused checkpoint left %v", entries)
	}
}

// TestCheckpointAndRestoreUnderRunc: a runc handler's container is dumped
// by `runc checkpoint` and restored by `runc restore` under the new
// container's monitor, in another pod of the handler; husk's own runtime
// does not take runc's checkpoint.
func TestCheckpointAndRestoreUnderRunc(t *testing.T) {
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal("runc is not installed (make deps installs it)")
	}
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "busybox:plain", imagetest.BusyboxImage(t, v1.Config{}))
	d := newDaemon(t, insecureConfig(reg.Host)+"[runtimes.runc]\npath = \""+runc+"\"\n")
	newPodNet(t, d).install(t, d)
	pullImage(t, d, reg.Ref("busybox:plain"))
	e := &ctrEnv{d: d, reg: reg, logs: t.TempDir()}
	before := countContainerLeaks(t, d)
	runcPod := func(name string) (string, *runtimeapi.PodSandboxConfig) {
		cfg := podConfig(name)
		cfg.LogDirectory = filepath.Join(e.logs, name)
		resp, err := d.runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: "runc"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.PodSandboxId, cfg
	}
	podA, cfgA := runcPod("runc-a")
	id, archive, from, to := e.checkpointCounter(t, podA, cfgA)

	// husk's own runtime refuses runc's checkpoint.
	own, ownCfg := e.pod(t, "own")
	_, err = d.runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: own, SandboxConfig: ownCfg,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "counter"}, Image: &runtimeapi.ImageSpec{Image: archive}}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("restore of runc's checkpoint by husk's runtime: %v, want FailedPrecondition", err)
	}

	podB, cfgB := runcPod("runc-b")
	pods := []string{podA, podB, own}
	defer func() {
		for _, p := range pods {
			stopPod(t, d, p)
			removePod(t, d, p)
		}
		if after := countContainerLeaks(t, d); after != before {
			t.Errorf("checkpoint and restore left something behind:\nbefore %+v\nafter  %+v", before, after)
		}
	}()
	if unifiedHost {
		// runc 1.1 maps the checkpointed cgroup to the new one for v1
		// only: on v2 the restored processes would land in the old
		// container's cgroup. husk refuses.
		_, err := d.runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podB, SandboxConfig: cfgB,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "counter"}, Image: &runtimeapi.ImageSpec{Image: archive}}})
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("restore of runc's checkpoint on cgroup v2: %v, want FailedPrecondition", err)
		}
		// Its pod is checkpointed whole all the same (runc pauses and
		// dumps it).
		if _, err := d.runtime.CheckpointPod(context.Background(), &runtimeapi.CheckpointPodRequest{PodSandboxId: podA, OutputPath: t.TempDir(), ContainerIds: []string{id}}); err != nil {
			t.Errorf("CheckpointPod: %v", err)
		}
		return
	}
	restored, _ := e.restoreCounter(t, podB, cfgB, archive, from, to)
	resp, err := e.exec(t, restored, 10, "cat", "/made-here")
	if err != nil || strings.TrimSpace(string(resp.Stdout)) != "made" {
		t.Errorf("exec in the restored container: %v, %v", resp, err)
	}

	// The pod whole, under runc: paused by runc, dumped by runc.
	dir := t.TempDir()
	if _, err := d.runtime.CheckpointPod(context.Background(), &runtimeapi.CheckpointPodRequest{PodSandboxId: podB, OutputPath: dir, ContainerIds: []string{restored}}); err != nil {
		t.Fatalf("CheckpointPod: %v", err)
	}
	podC := podConfig("runc-c")
	podC.LogDirectory = filepath.Join(e.logs, "runc-c")
	rp, err := d.runtime.RestorePod(context.Background(), &runtimeapi.RestorePodRequest{CheckpointPath: dir, Config: podC, RuntimeHandler: "runc",
		ContainerConfigs: []*runtimeapi.ContainerConfig{ctrConfig("counter", e.image("plain"))}})
	if err != nil {
		t.Fatalf("RestorePod: %v", err)
	}
	pods = append(pods, rp.PodSandboxId)
	e.start(t, rp.RestoredContainers[0].ContainerId)
	logC := e.status(t, rp.RestoredContainers[0].ContainerId).LogPath
	waitFor(t, func() bool { return lastNumber(t, logC) > to+1 })
	checkRestoredInPod(t, d, rp.PodSandboxId)
}

// TestCheckpointAndRestorePod checkpoints a pod of two containers that
// talk over localhost, frozen together, and restores the pod from it: the
// client goes on getting the server's count from where both were.
func TestCheckpointAndRestorePod(t *testing.T) {
	e := newCtrEnv(t)
	before := countContainerLeaks(t, e.d)
	ctx := context.Background()
	podA, cfgA := e.pod(t, "cpod-a")
	server := ctrConfig("server", e.image("plain"), "sh", "-c", `i=0; while true; do i=$((i+1)); echo "hits $i" | nc -l -p 8080; done`)
	client := ctrConfig("client", e.image("plain"), "sh", "-c", `while true; do nc -w 1 127.0.0.1 8080 </dev/null; sleep 0.2; done`)
	ids := []string{e.run(t, podA, cfgA, server), e.run(t, podA, cfgA, client)}
	logA := e.status(t, ids[1]).LogPath
	hits := func(log string) int {
		out := output(t, log, "stdout")
		for i := len(out) - 1; i >= 0; i-- {
			if n, err := strconv.Atoi(strings.TrimPrefix(out[i], "hits ")); err == nil {
				return n
			}
		}
		return 0
	}
	waitFor(t, func() bool { return hits(logA) >= 3 })

	dir := t.TempDir()
	from := hits(logA)
	if _, err := e.d.runtime.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podA, OutputPath: dir, ContainerIds: ids}); err != nil {
		t.Fatalf("CheckpointPod: %v", err)
	}
	to := hits(logA)
	// Thawed: the pod goes on.
	waitFor(t, func() bool { return hits(logA) > to+2 })
	// A second checkpoint into the same directory is refused.
	if _, err := e.d.runtime.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podA, OutputPath: dir, ContainerIds: ids}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("CheckpointPod into a directory that is not empty: %v, want InvalidArgument", err)
	}

	cfgB := podConfig("cpod-b")
	cfgB.LogDirectory = filepath.Join(e.logs, "cpod-b")
	configs := []*runtimeapi.ContainerConfig{ctrConfig("server", e.image("plain")), ctrConfig("client", e.image("plain"))}
	podsBefore := len(listPods(t, e.d))
	if _, err := e.d.runtime.RestorePod(ctx, &runtimeapi.RestorePodRequest{CheckpointPath: dir, Config: cfgB, ContainerConfigs: configs[:1]}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("RestorePod without the client's config: %v, want InvalidArgument", err)
	}
	if n := len(listPods(t, e.d)); n != podsBefore {
		t.Errorf("a refused RestorePod left a pod: %d pods, %d before", n, podsBefore)
	}
	resp, err := e.d.runtime.RestorePod(ctx, &runtimeapi.RestorePodRequest{CheckpointPath: dir, Config: cfgB, ContainerConfigs: configs})
	if err != nil {
		t.Fatalf("RestorePod: %v", err)
	}
	if len(resp.RestoredContainers) != 2 {
		t.Fatalf("restored containers: %v", resp.RestoredContainers)
	}
	var clientB string
	for _, rc := range resp.RestoredContainers {
		if st := e.status(t, rc.ContainerId); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
			t.Errorf("restored %s is %s, want created", rc.Name, st.State)
		}
		e.start(t, rc.ContainerId)
		if rc.Name == "client" {
			clientB = rc.ContainerId
		}
	}
	checkRestoredInPod(t, e.d, resp.PodSandboxId)
	logB := e.status(t, clientB).LogPath
	waitFor(t, func() bool { return hits(logB) > 0 })
	first := hits(logB)
	if first <= from || first > to+3 {
		t.Errorf("the restored client got hits %d first; the pod was at %d to %d when checkpointed", first, from, to)
	}
	waitFor(t, func() bool { return hits(logB) > first+2 })
	t.Logf("pod checkpointed at hits %d-%d, restored pod went on at %d", from, to, first)

	for _, p := range []string{podA, resp.PodSandboxId} {
		stopPod(t, e.d, p)
		removePod(t, e.d, p)
	}
	if after := countContainerLeaks(t, e.d); after != before {
		t.Errorf("pod checkpoint and restore left something behind:\nbefore %+v\nafter  %+v", before, after)
	}
}

func listPods(t *testing.T, d *daemon) []*runtimeapi.PodSandbox {
	t.Helper()
	resp, err := d.runtime.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Items
}

// connectSource connects to a unix socket and holds the connection.
const connectSource = `#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(int argc, char **argv) {
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
		perror("connect");
		return 1;
	}
	printf("connected\n");
	fflush(stdout);
	for (;;)
		pause();
}
`

// TestCheckpointRefusesAnExternalSocket: a container connected to a unix
// socket of the host's cannot be dumped (CRIU will not take half of a
// connection); the refusal gives CRIU's reason, the container runs on,
// thawed, and nothing of the attempt is left.
func TestCheckpointRefusesAnExternalSocket(t *testing.T) {
	e := newCtrEnv(t)
	e.reg.Push(t, "connect:test", staticCImage(t, "connect", connectSource))
	pullImage(t, e.d, e.reg.Ref("connect:test"))
	sockDir := t.TempDir()
	l, err := net.Listen("unix", filepath.Join(sockDir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer func() { _ = c.Close() }()
		}
	}()
	podID, podCfg := e.pod(t, "ckpt-sock")
	cfg := ctrConfig("connect", &runtimeapi.ImageSpec{Image: e.reg.Ref("connect:test")})
	cfg.Args = []string{"/sock/s.sock"}
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/sock", HostPath: sockDir}}
	id := e.run(t, podID, podCfg, cfg)
	waitFor(t, func() bool {
		out := output(t, e.status(t, id).LogPath, "stdout")
		return len(out) == 1 && out[0] == "connected"
	})
	dir := t.TempDir()
	err = e.checkpoint(id, filepath.Join(dir, "sock.tar"))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "CRIU: Error") {
		t.Fatalf("checkpoint of a container connected to the host: %v, want FailedPrecondition with CRIU's errors", err)
	}
	t.Logf("refused: %v", err)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a refused checkpoint left %v", entries)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(e.d.root, "containers", id, ".checkpoint-*")); len(leftovers) != 0 {
		t.Errorf("a refused checkpoint left %v", leftovers)
	}
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("after the refusal the container is %s", st.State)
	}
	// Thawed: it still takes a signal and ends.
	if _, err := e.d.runtime.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Errorf("stopped after the refusal: %s", st.State)
	}
}
