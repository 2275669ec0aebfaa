//go:build kubelet

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// statsPod is the static pod whose stats both runtimes report: CPU, memory,
// a file written to its writable layer, an emptyDir, logs and traffic on
// its interface.
const statsPod = `apiVersion: v1
kind: Pod
metadata: {name: stats, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: worker
    image: busybox
    command: ["sh", "-c", "dd if=/dev/zero of=/tmp/f bs=1M count=4 2>/dev/null; dd if=/dev/zero of=/scratch/f bs=1M count=2 2>/dev/null; while true; do echo tick; ping -c 1 -W 1 $(ip route | awk '/default/ {print $3}') >/dev/null 2>&1; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1; done"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  volumes: [{name: scratch, emptyDir: {}}]
`

// kubeletView is what a standalone kubelet serves about the stats pod:
// the non-zero leaves of its /stats/summary entry, and the label names of
// each /metrics/cadvisor series about it.
type kubeletView struct {
	summary map[string]bool     // JSON path -> the value is not zero or empty
	metrics map[string][]string // metric name (and the series' kind) -> label names
}

// TestKubeletStatsAsContainerd: kubelet's /stats/summary and
// /metrics/cadvisor of a pod on husk (through kubelet's CRI stats,
// PodAndContainerStatsFromCRI) have every field and series that the same
// pod has on containerd (through kubelet's cAdvisor), the way
// metrics-server, `kubectl top` and eviction read them.
func TestKubeletStatsAsContainerd(t *testing.T) {
	kubelet := os.Getenv("KUBELET")
	if kubelet == "" {
		t.Fatal("KUBELET must name a kubelet binary (make kubelet-test builds one)")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Fatal("containerd is not installed (make kubelet-test installs Debian's)")
	}
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "library/busybox:latest", imagetest.BusyboxImage(t, v1.Config{}))
	// containerd's sandbox image: anything that waits.
	reg.Push(t, "pause:3.6", imagetest.BusyboxImage(t, v1.Config{Entrypoint: []string{"sleep", "2147483647"}}))

	ctrd := viewOnContainerd(t, kubelet, reg)
	husk := viewOnHusk(t, kubelet, reg)

	var missing []string
	for path, set := range ctrd.summary {
		if why, ok := summaryExceptions[path]; ok {
			t.Logf("%s: not compared: %s", path, why)
			continue
		}
		if set && !husk.summary[path] {
			missing = append(missing, path)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("/stats/summary fields containerd's pod has and husk's lacks (or has zero):\n  %s", strings.Join(missing, "\n  "))
	}
	var extra []string
	for path, set := range husk.summary {
		if set && !ctrd.summary[path] {
			extra = append(extra, path)
		}
	}
	sort.Strings(extra)
	t.Logf("/stats/summary: %d fields set on containerd, %d on husk; husk's only: %v", countSet(ctrd.summary), countSet(husk.summary), extra)

	missing = missing[:0]
	for name, labels := range ctrd.metrics {
		if why, ok := metricExceptions[name]; ok {
			t.Logf("%s: not compared: %s", name, why)
			continue
		}
		got, ok := husk.metrics[name]
		switch {
		case !ok:
			missing = append(missing, name)
		case !slices.Equal(got, labels):
			missing = append(missing, fmt.Sprintf("%s: labels %v, containerd's %v", name, got, labels))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("/metrics/cadvisor series containerd's pod has and husk's lacks:\n  %s", strings.Join(missing, "\n  "))
	}
	t.Logf("/metrics/cadvisor: %d series kinds on containerd, %d on husk", len(ctrd.metrics), len(husk.metrics))
}

// What containerd's pod has that husk's cannot, and why.
var (
	summaryExceptions = map[string]string{
		".swap.time": "kubelet's CRI stats path makes no pod swap stats (LinuxPodSandboxStats has no swap; listPodStatsStrictlyFromCRI does not add the containers' up)",
	}
	metricExceptions = map[string]string{
		"container_health_state (container)": "cAdvisor's -1 (no health check) cannot be sent: the CRI's metric values are unsigned",
		"container_health_state (pod)":       "cAdvisor's -1 (no health check) cannot be sent: the CRI's metric values are unsigned",
	}
)

func countSet(m map[string]bool) int {
	n := 0
	for _, set := range m {
		if set {
			n++
		}
	}
	return n
}

// viewOnHusk runs the stats pod with kubelet on husk.
func viewOnHusk(t *testing.T, kubelet string, reg *imagetest.Registry) kubeletView {
	t.Helper()
	d := newDaemon(t, fmt.Sprintf("[registry.\"docker.io\"]\nmirrors = [\"http://%s\"]\n", reg.Host))
	newPodNet(t, d).install(t, d)
	return statsView(t, kubelet, "husk", "unix://"+d.sock, "featureGates:\n  PodAndContainerStatsFromCRI: true\n")
}

// viewOnContainerd runs the stats pod with kubelet on containerd, started
// here with its state in a temporary directory and its socket where
// kubelet's cAdvisor looks for it.
func viewOnContainerd(t *testing.T, kubelet string, reg *imagetest.Registry) kubeletView {
	t.Helper()
	const sock = "/run/containerd/containerd.sock"
	if _, err := os.Stat(sock); err == nil {
		t.Fatalf("%s exists: is a containerd running?", sock)
	}
	dir := t.TempDir()
	n := &podNet{name: "e2e-ctrd", bridge: "hkctrd0", subnet: "10.99.77.0/24", gateway: "10.99.77.1", dataDir: filepath.Join(dir, "cni-data")}
	confDir := filepath.Join(dir, "cni")
	_ = os.MkdirAll(confDir, 0o755)
	writeFile(t, filepath.Join(confDir, "10-e2e.conflist"), n.conflist())
	writeFile(t, filepath.Join(dir, "config.toml"), fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
address = %[3]q
[plugins."io.containerd.grpc.v1.cri"]
sandbox_image = "registry.k8s.io/pause:3.6"
# Root here cannot lower oom_score_adj below its own (no
# CAP_SYS_RESOURCE): kubelet's -998 for the sandbox must be raised.
restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".cni]
bin_dir = %[4]q
conf_dir = %[5]q
[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
SystemdCgroup = %[6]v
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
endpoint = ["http://%[7]s"]
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."registry.k8s.io"]
endpoint = ["http://%[7]s"]
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, cniBinDirs[0], confDir, e2eDriver() == "systemd", reg.Host))
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	c.Stdout, c.Stderr = logf, logf
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Its shims and their containers outlive it: the pod is gone by
		// now (kubelet removed it), the shims go with SIGKILL.
		_ = c.Process.Kill()
		_ = c.Wait()
		_ = exec.Command("pkill", "-9", "-f", "containerd-shim-runc-v2 -namespace k8s.io").Run()
		unmountUnder(dir)
		_ = exec.Command("ip", "link", "del", n.bridge).Run()
		_ = os.Remove(sock)
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			lines := strings.Split(string(b), "\n")
			t.Logf("containerd log (last 40 lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	waitFor(t, func() bool { _, err := os.Stat(sock); return err == nil })
	return statsView(t, kubelet, "containerd", "unix://"+sock, "")
}

// statsView runs a standalone kubelet on the runtime at endpoint with the
// stats pod, waits until its stats are complete, reads them, and removes
// the pod. What kubelet served is kept as the test's artifacts (go test
// -artifacts), named for the runtime.
func statsView(t *testing.T, kubelet, runtime, endpoint, extraConfig string) kubeletView {
	t.Helper()
	dir := t.TempDir()
	manifests := filepath.Join(dir, "manifests")
	_ = os.MkdirAll(manifests, 0o755)
	writeFile(t, filepath.Join(dir, "kubelet.yaml"), standaloneKubelet(manifests, endpoint, "address: 127.0.0.1\nreadOnlyPort: 10255\n"+extraConfig))
	writeFile(t, filepath.Join(manifests, "stats.yaml"), statsPod)
	logf, err := os.Create(filepath.Join(dir, "kubelet.log"))
	if err != nil {
		t.Fatal(err)
	}
	k := exec.Command(kubelet, "--config", filepath.Join(dir, "kubelet.yaml"), "--root-dir", filepath.Join(dir, "root"), "--hostname-override", "stats-node", "--v", "2")
	k.Stdout, k.Stderr = logf, logf
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = k.Process.Kill()
			_ = k.Wait()
			unmountUnder(dir)
		}
	}
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			lines := strings.Split(string(b), "\n")
			t.Logf("kubelet on %s (last 60 lines):\n%s", endpoint, strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
		stop()
	}()

	// Stats settle over a few housekeeping rounds: wait until two reads
	// 15 s apart set the same fields.
	var view kubeletView
	deadline := time.Now().Add(5 * time.Minute)
	for prev := -1; ; {
		if time.Now().After(deadline) {
			t.Fatalf("kubelet on %s: the stats pod's stats did not settle (last: %d fields)", endpoint, prev)
		}
		time.Sleep(15 * time.Second)
		summary, err := kubeletGet("/stats/summary")
		if err != nil {
			continue
		}
		view.summary = podSummary(t, summary, "stats")
		writeFile(t, filepath.Join(t.ArtifactDir(), runtime+"-summary.json"), summary)
		if n := countSet(view.summary); n == 0 || n != prev {
			prev = n
			continue
		}
		break
	}
	metrics, err := kubeletGet("/metrics/cadvisor")
	if err != nil {
		t.Fatal(err)
	}
	view.metrics = podMetrics(metrics, "stats")
	writeFile(t, filepath.Join(t.ArtifactDir(), runtime+"-metrics.txt"), metrics)

	// kubelet removes the pod when its manifest goes.
	_ = os.Remove(filepath.Join(manifests, "stats.yaml"))
	waitFor(t, func() bool {
		b, _ := kubeletGet("/pods")
		return b != "" && !strings.Contains(b, `"name":"stats"`)
	})
	time.Sleep(5 * time.Second) // its sandbox's removal
	stop()
	return view
}

func kubeletGet(path string) (string, error) {
	resp, err := http.Get("http://127.0.0.1:10255" + path)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), err
}

// podSummary flattens a pod's entry in /stats/summary into its leaves:
// lists of named things (containers, interfaces, volumes) by name.
func podSummary(t *testing.T, summary, pod string) map[string]bool {
	t.Helper()
	var s struct {
		Pods []map[string]any `json:"pods"`
	}
	if err := json.Unmarshal([]byte(summary), &s); err != nil {
		t.Fatalf("/stats/summary: %v", err)
	}
	out := map[string]bool{}
	for _, p := range s.Pods {
		if ref, _ := p["podRef"].(map[string]any); ref["name"] == pod+"-stats-node" {
			flatten("", p, out)
		}
	}
	return out
}

func flatten(prefix string, v any, out map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			flatten(prefix+"."+k, e, out)
		}
	case []any:
		for i, e := range v {
			key := fmt.Sprint(i)
			if m, ok := e.(map[string]any); ok {
				if name, ok := m["name"].(string); ok {
					key = name
				}
			}
			flatten(prefix+"["+key+"]", e, out)
		}
	case float64:
		out[prefix] = v != 0
	case string:
		out[prefix] = v != ""
	case bool:
		out[prefix] = true
	default:
		out[prefix] = false // null
	}
}

// podMetrics lists the series about a pod in cAdvisor's exposition: by
// metric name and whether the series is the pod's own (container="") or a
// container's, their label names.
func podMetrics(text, pod string) map[string][]string {
	out := map[string][]string{}
	for _, line := range strings.Split(text, "\n") {
		open := strings.IndexByte(line, '{')
		end := strings.LastIndexByte(line, '}')
		if strings.HasPrefix(line, "#") || open < 0 || end < open {
			continue
		}
		labels := map[string]string{}
		for _, kv := range splitLabels(line[open+1 : end]) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				labels[k] = strings.Trim(v, `"`)
			}
		}
		if labels["pod"] != pod+"-stats-node" {
			continue
		}
		// A container's series, the pod cgroup's (no container, no
		// image), or the sandbox's: containerd's pause container
		// (container "" or "POD" with the pause image), of which only
		// the network is compared: husk has no pause container and
		// reports the pod's network as container "POD".
		kind := "container"
		switch c := labels["container"]; {
		case c == "" && labels["image"] == "":
			kind = "pod"
		case c == "" || c == "POD":
			if !strings.HasPrefix(line[:open], "container_network_") {
				continue
			}
			kind = "sandbox"
		}
		names := make([]string, 0, len(labels))
		for k := range labels {
			names = append(names, k)
		}
		sort.Strings(names)
		out[line[:open]+" ("+kind+")"] = names
	}
	return out
}

// splitLabels splits a series' label list at the commas between labels
// (not those inside quoted values).
func splitLabels(s string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}
