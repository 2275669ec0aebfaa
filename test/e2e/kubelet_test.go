//go:build kubelet

// A real kubelet (standalone, static pods) on husk: `make kubelet-test`
// builds kubelet from the Kubernetes module and runs this. It is not in
// `make test`: building kubelet takes ~8 minutes.

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
// Twice: with kubelet's default PLEG, which relists every second, and
// with EventedPLEG, where kubelet reads the pod's containers from
// PodSandboxStatus and relists a pod as soon as husk's event stream says
// one of its containers stopped.
func TestKubeletRunsAStaticPod(t *testing.T) {
	kubelet := os.Getenv("KUBELET")
	if kubelet == "" {
		t.Fatal("KUBELET must name a kubelet binary (make kubelet-test builds one)")
	}
	t.Run("GenericPLEG", func(t *testing.T) { runStaticPods(t, kubelet, false) })
	t.Run("EventedPLEG", func(t *testing.T) { runStaticPods(t, kubelet, true) })
}

func runStaticPods(t *testing.T, kubelet string, evented bool) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "library/busybox:latest", imagetest.BusyboxImage(t, v1.Config{}))
	d := newDaemon(t, fmt.Sprintf("[registry.\"docker.io\"]\nmirrors = [\"http://%s\"]\n", reg.Host))
	newPodNet(t, d).install(t, d)
	dir := t.TempDir()
	manifests := filepath.Join(dir, "manifests")
	_ = os.MkdirAll(manifests, 0o755)
	extra := "readOnlyPort: 0\nlocalStorageCapacityIsolation: false\n"
	verbosity := "2"
	if evented {
		// Its metrics on the read-only port; its relist requests are
		// logged at level 4.
		extra = "readOnlyPort: 10255\nlocalStorageCapacityIsolation: false\nfeatureGates:\n  EventedPLEG: true\n"
		verbosity = "4"
		// A container that ends: kubelet learns of it from the event.
		_ = os.WriteFile(filepath.Join(manifests, "quitter.yaml"), []byte(`apiVersion: v1
kind: Pod
metadata:
  name: quitter
  namespace: default
spec:
  restartPolicy: Never
  containers:
  - name: quitter
    image: busybox
    command: ["sh", "-c", "sleep 3; exit 4"]
`), 0o644)
	}
	cfg := standaloneKubelet(manifests, "unix://"+d.sock, extra)
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
	k := exec.Command(kubelet, "--config", filepath.Join(dir, "kubelet.yaml"), "--root-dir", filepath.Join(dir, "root"), "--hostname-override", "husk-node", "--v", verbosity)
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
						if evented {
							checkEventedPLEG(t, d, filepath.Join(dir, "kubelet.log"))
						} else {
							checkKubeletCheckpoint(t, d, c, filepath.Join(dir, "root"))
						}
						// Remove the manifests: kubelet tears the pods down.
						_ = os.Remove(filepath.Join(manifests, "hello.yaml"))
						_ = os.Remove(filepath.Join(manifests, "userns.yaml"))
						_ = os.Remove(filepath.Join(manifests, "quitter.yaml"))
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

// checkKubeletCheckpoint: kubelet's checkpoint API (KEP-2008, on by
// default) has husk checkpoint the static pod's running container, which
// goes on, and kubelet names the archive it had husk write under its
// root's checkpoints directory.
func checkKubeletCheckpoint(t *testing.T, d *daemon, c *runtimeapi.Container, root string) {
	t.Helper()
	ps, err := d.runtime.PodSandboxStatus(context.Background(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: c.PodSandboxId})
	if err != nil {
		t.Fatal(err)
	}
	md := ps.Status.Metadata
	client := &http.Client{Timeout: 3 * time.Minute, Transport: &http.Transport{
		// kubelet's own self-signed certificate
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a kubelet on loopback
	}}
	url := fmt.Sprintf("https://127.0.0.1:10299/checkpoint/%s/%s/%s", md.Namespace, md.Name, c.Metadata.Name)
	resp, err := client.Post(url, "", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	var out struct {
		Items []string `json:"items"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || len(out.Items) != 1 || !strings.HasPrefix(out.Items[0], filepath.Join(root, "checkpoints")+"/") {
		t.Fatalf("kubelet's checkpoint API: %s %s", resp.Status, body)
	}
	checkArchiveLayout(t, out.Items[0], c.Metadata.Name, md.Name)
	st, err := d.runtime.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
	if err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("after kubelet's checkpoint: %v, %v", st.GetStatus().GetState(), err)
	}
	t.Logf("kubelet's checkpoint API wrote %s", out.Items[0])
}

// checkEventedPLEG: kubelet is subscribed to husk's events (its metrics
// count a connection, no error and events received) and asked for a relist
// of the quitter's pod when its container stopped, which it learnt from
// the event rather than from its next relist. The time from the exit to
// that request is logged.
func checkEventedPLEG(t *testing.T, d *daemon, kubeletLog string) {
	t.Helper()
	var quitter *runtimeapi.ContainerStatus
	waitFor(t, func() bool {
		list, err := d.runtime.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{})
		if err != nil {
			return false
		}
		for _, c := range list.Containers {
			if c.Metadata.Name == "quitter" && c.State == runtimeapi.ContainerState_CONTAINER_EXITED {
				st, err := d.runtime.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
				if err == nil {
					quitter = st.Status
				}
				return err == nil
			}
		}
		return false
	})
	if quitter.ExitCode != 4 {
		t.Errorf("quitter exited with %d, want 4", quitter.ExitCode)
	}
	var line string
	waitFor(t, func() bool {
		b, _ := os.ReadFile(kubeletLog)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "requested pod relist after container termination") && strings.Contains(l, quitter.Id) {
				line = l
				return true
			}
		}
		return false
	})
	// klog's header is "Lmmdd hh:mm:ss.uuuuuu" (UTC here): times of day.
	if f := strings.Fields(line); len(f) > 1 {
		if at, err := time.Parse("15:04:05.000000", f[1]); err == nil {
			finished := time.Unix(0, quitter.FinishedAt).UTC()
			exit := finished.Sub(finished.Truncate(24 * time.Hour))
			asked := at.Sub(time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC))
			t.Logf("kubelet asked for the quitter's relist %v after its exit", asked-exit)
		}
	}
	metrics, err := kubeletGet("/metrics")
	if err != nil {
		t.Fatalf("kubelet's metrics: %v", err)
	}
	for name, ok := range map[string]func(float64) bool{
		"kubelet_evented_pleg_connection_success_count":         func(v float64) bool { return v >= 1 },
		"kubelet_evented_pleg_connection_error_count":           func(v float64) bool { return v == 0 },
		"kubelet_evented_pleg_connection_latency_seconds_count": func(v float64) bool { return v >= 1 },
	} {
		v, found := metricValue(metrics, name)
		if !found || !ok(v) {
			t.Errorf("kubelet's %s is %v (found %v)", name, v, found)
		}
	}
}

// metricValue is the value of an unlabelled series in Prometheus' text
// format.
func metricValue(text, name string) (float64, bool) {
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			return v, err == nil
		}
	}
	return 0, false
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
