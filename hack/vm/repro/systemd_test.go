// Package repro reproduces, in the test guest, a defect of the systemd
// cgroup driver: a pod under kubelet's besteffort pod slice runs, but its
// first container with a memory limit fails to be created. It drives a real
// `husk serve --cgroup-driver systemd` ($HUSK_BIN, with husk-runtime next to
// it) and prints the daemon's log, which has the stack of a recovered panic.
// hack/vm/test.sh builds it with `go test -c` and runs it in the guest.
package repro

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

func TestSystemdDriverContainerWithMemoryLimit(t *testing.T) {
	for _, driver := range []string{"systemd", "cgroupfs"} {
		t.Run(driver, func(t *testing.T) { run(t, driver) })
	}
}

func run(t *testing.T, driver string) {
	husk := os.Getenv("HUSK_BIN")
	if husk == "" || os.Geteuid() != 0 {
		t.Skip("needs root and HUSK_BIN (hack/vm/test.sh sets it)")
	}
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "busybox:plain", imagetest.BusyboxImage(t, v1.Config{}))

	// Not t.TempDir: husk leaves its state directory mounted (as test/e2e
	// does, unmount what is under it before removing it).
	dir, err := os.MkdirTemp("", "husk-vm-repro-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmountUnder(dir)
		_ = os.RemoveAll(dir)
	})
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "[registry.%q]\ninsecure = true\n", reg.Host), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "husk.sock")
	logPath := filepath.Join(dir, "husk.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(husk, "serve", "--config", cfg, "--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"),
		"--listen", sock, "--v", "10", "--cni-conf-dir", filepath.Join(dir, "net.d"), "--cgroup-driver", driver)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = logf.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		b, _ := os.ReadFile(logPath)
		t.Logf("husk log (--cgroup-driver %s):\n%s", driver, b)
	})

	var rt runtimeapi.RuntimeServiceClient
	var img runtimeapi.ImageServiceClient
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			t.Cleanup(func() { _ = conn.Close() })
			rt, img = runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
			break
		}
		_ = conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("husk did not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx := context.Background()
	image := reg.Ref("busybox:plain")
	if _, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatalf("PullImage: %v", err)
	}

	uid := fmt.Sprintf("vm%d", rand.IntN(1_000_000))
	parent := "kubepods-besteffort-pod" + uid + ".slice"
	if driver == "cgroupfs" {
		parent = "/kubepods/besteffort/pod" + uid
	}
	pod := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "mem", Namespace: "vm", Uid: uid},
		Hostname:     "mem",
		LogDirectory: filepath.Join(dir, "logs"),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: parent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER},
			},
		},
	}
	resp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		t.Fatalf("RunPodSandbox under %s: %v", parent, err)
	}
	podID := resp.PodSandboxId
	t.Cleanup(func() {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
			t.Errorf("StopPodSandbox: %v", err)
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
			t.Errorf("RemovePodSandbox: %v", err)
		}
		// kubelet makes and removes the parents; here the test does.
		for _, p := range []string{
			"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uid + ".slice",
			"kubepods.slice/kubepods-besteffort.slice", "kubepods.slice",
			"kubepods/besteffort/pod" + uid, "kubepods/besteffort", "kubepods",
		} {
			_ = os.Remove(filepath.Join("/sys/fs/cgroup", p))
		}
	})
	st, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pod %s runs under %s; status info: %v", podID, parent, st.GetInfo())

	ctr := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  []string{"sleep", "600"},
		LogPath:  "sleep.log",
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources:       &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER}},
		},
	}
	cr, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: ctr, SandboxConfig: pod})
	if err != nil {
		t.Fatalf("CreateContainer (busybox sleep, memory limit 64 MiB) under %s: %v", parent, err)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	cs, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cr.ContainerId})
	if err != nil {
		t.Fatal(err)
	}
	if cs.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("container state %v, want running", cs.GetStatus().GetState())
	}
	if _, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: cr.ContainerId, Timeout: 1}); err != nil {
		t.Errorf("StopContainer: %v", err)
	}
}

// unmountUnder lazily unmounts what is mounted below dir, deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}
