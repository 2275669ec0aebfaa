//go:build kubelet

// A real kubelet (standalone, static pods) on husk: `make kubelet-test`
// builds kubelet from the Kubernetes module and runs this. It is not in
// `make test`: building kubelet takes ~8 minutes.

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// TestKubeletRunsAStaticPod: kubelet pulls the image (through a mirror),
// runs the pod and its container, probes it with exec, and tears it down
// when its manifest goes; a second pod has a user namespace of its own.
func TestKubeletRunsAStaticPod(t *testing.T) {
	kubelet := os.Getenv("KUBELET")
	if kubelet == "" {
		t.Fatal("KUBELET must name a kubelet binary (make kubelet-test builds one)")
	}
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "library/busybox:latest", imagetest.BusyboxImage(t, v1.Config{}))
	d := newDaemon(t, fmt.Sprintf("[registry.\"docker.io\"]\nmirrors = [\"http://%s\"]\n", reg.Host))
	newPodNet(t, d).install(t, d)
	dir := t.TempDir()
	manifests := filepath.Join(dir, "manifests")
	_ = os.MkdirAll(manifests, 0o755)
	cfg := standaloneKubelet(manifests, "unix://"+d.sock, "readOnlyPort: 0\nlocalStorageCapacityIsolation: false\n")
	_ = os.WriteFile(filepath.Join(dir, "kubelet.yaml"), []byte(cfg), 0o644)
	_ = os.WriteFile(filepath.Join(manifests, "hello.yaml"), []byte(`apiVersion: v1
kind: Pod
metadata:
  name: hello
  namespace: default
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: hello
    image: busybox
    command: ["sh", "-c", "while true; do echo hello from kubelet; sleep 1; done"]
    livenessProbe:
      exec:
        command: ["sh", "-c", "true"]
      periodSeconds: 2
`), 0o644)
	// The same with a user namespace of its own (hostUsers: false): kubelet
	// allocates the pod its ids and asks husk for the mappings.
	_ = os.WriteFile(filepath.Join(manifests, "userns.yaml"), []byte(`apiVersion: v1
kind: Pod
metadata:
  name: userns
  namespace: default
spec:
  hostUsers: false
  terminationGracePeriodSeconds: 2
  containers:
  - name: userns
    image: busybox
    command: ["sh", "-c", "while true; do echo uid $(id -u) map $(head -1 /proc/self/uid_map); sleep 1; done"]
`), 0o644)
	logf, _ := os.Create(filepath.Join(dir, "kubelet.log"))
	k := exec.Command(kubelet, "--config", filepath.Join(dir, "kubelet.yaml"), "--root-dir", filepath.Join(dir, "root"), "--hostname-override", "husk-node", "--v", "2")
	k.Stdout, k.Stderr = logf, logf
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = k.Process.Kill()
		_ = k.Wait()
		unmountUnder(dir)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "kubelet.log"))
			lines := strings.Split(string(b), "\n")
			t.Logf("kubelet log (last 80 lines):\n%s", strings.Join(lines[max(0, len(lines)-80):], "\n"))
		}
	}()
	// Room for an emulated guest (make vm-test), where kubelet's own
	// start takes most of a minute.
	deadline := time.Now().Add(5 * time.Minute)
	usernsSeen := false
	for {
		list, err := d.runtime.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{})
		if err == nil {
			for _, c := range list.Containers {
				if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING && c.Metadata.Name == "userns" && !usernsSeen {
					st, _ := d.runtime.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
					out := output(t, st.Status.LogPath, "stdout")
					if len(out) == 0 {
						continue
					}
					t.Logf("kubelet's pod with hostUsers: false runs on husk: %q", out[0])
					if f := strings.Fields(out[0]); len(f) != 6 || f[1] != "0" || f[3] != "0" || f[4] == "0" {
						t.Errorf("the container's root is not a user namespace's: %q", out[0])
					}
					usernsSeen = true
				}
				if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING && c.Metadata.Name == "hello" && usernsSeen {
					st, _ := d.runtime.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
					out := output(t, st.Status.LogPath, "stdout")
					if len(out) >= 3 {
						t.Logf("kubelet's pod runs on husk: %s %q", c.Metadata.Name, out[:3])
						checkKubeletPodCgroup(t, d, c.PodSandboxId)
						time.Sleep(5 * time.Second) // a few liveness probes
						b, _ := os.ReadFile(filepath.Join(dir, "kubelet.log"))
						if strings.Contains(string(b), "Liveness probe failed") {
							t.Errorf("liveness probe failed")
						}
						st2, _ := d.runtime.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
						if st2.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
							t.Errorf("container not running after probes: %v", st2.Status.State)
						}
						// Remove the manifests: kubelet tears the pods down.
						_ = os.Remove(filepath.Join(manifests, "hello.yaml"))
						_ = os.Remove(filepath.Join(manifests, "userns.yaml"))
						waitFor(t, func() bool {
							pods, _ := d.runtime.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{})
							for _, p := range pods.GetItems() {
								if p.State == runtimeapi.PodSandboxState_SANDBOX_READY {
									return false
								}
							}
							return true
						})
						return
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("kubelet's static pod did not run")
		}
		time.Sleep(time.Second)
	}
}

// checkKubeletPodCgroup: the pod sits in the cgroup kubelet made for it
// (a BestEffort pod: kubepods/besteffort/pod<uid>, or with the systemd
// driver kubepods-besteffort-pod<uid>.slice, as systemd lays it out), and
// its container's cgroup below the pod's.
func checkKubeletPodCgroup(t *testing.T, d *daemon, podID string) {
	t.Helper()
	_, info := podStatus(t, d, podID)
	want := "/kubepods/besteffort/pod"
	if e2eDriver() == "systemd" {
		want = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
	}
	t.Logf("the pod's cgroup: %s", info.CgroupPath)
	if !strings.HasPrefix(info.CgroupPath, want) {
		t.Errorf("pod cgroup %s is not under kubelet's %s<uid>", info.CgroupPath, want)
	}
	if _, err := os.Stat(cgroupDir(info.CgroupPath)); err != nil {
		t.Errorf("pod cgroup: %v", err)
	}
	if e2eDriver() == "systemd" {
		unit := filepath.Base(info.CgroupPath)
		if out, err := exec.Command("systemctl", "is-active", unit).CombinedOutput(); err != nil {
			t.Errorf("the pod's slice %s is not an active unit: %v %s", unit, err, out)
		}
	}
}

// standaloneKubelet is the config of a kubelet without an API server:
// static pods from manifests, the runtime at endpoint, the node's cgroup
// driver, anonymous and unchecked access on port 10299; extra adds to it.
func standaloneKubelet(manifests, endpoint, extra string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: %s
cgroupDriver: %s
failCgroupV1: %v
failSwapOn: false
containerRuntimeEndpoint: %s
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
port: 10299
healthzPort: 0
enforceNodeAllocatable: []
resolvConf: /etc/resolv.conf
%s`, manifests, e2eDriver(), unifiedHost, endpoint, extra)
}
