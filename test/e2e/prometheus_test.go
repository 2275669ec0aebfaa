package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// metricsClient talks HTTP to the daemon's metrics socket.
func metricsClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
}

func scrapeMetrics(t *testing.T, c *http.Client) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := c.Get("http://husk/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// seriesValue is the value of the series of name whose labels include
// want (a histogram's count), and whether there is one.
func seriesValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// The daemon's own metrics ([metrics] on a unix socket) move as a pod runs:
// calls by method and code, pods and containers by state, pulls, CNI,
// streaming sessions; the count of restarts survives a restart, and
// [debug] pprof serves profiles beside them.
func TestPrometheusMetrics(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "busybox:plain", imagetest.BusyboxImage(t, v1.Config{}))
	sock := filepath.Join(t.TempDir(), "metrics.sock")
	d := newDaemon(t, insecureConfig(reg.Host)+fmt.Sprintf("[metrics]\naddress = %q\n[debug]\npprof = true\n", "unix://"+sock))
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm()&0o007 != 0 {
		t.Fatalf("metrics socket: %v, mode %v: want one others cannot use", err, fi.Mode())
	}
	c := metricsClient(sock)
	newPodNet(t, d).install(t, d)
	pullImage(t, d, reg.Ref("busybox:plain"))
	ctx := context.Background()
	if _, err := d.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: reg.Ref("busybox:nosuch")}}); err == nil {
		t.Fatal("pulled an image the registry does not have")
	}
	e := &ctrEnv{d: d, reg: reg, logs: t.TempDir()}
	podID, pod := e.pod(t, "metrics")
	id := e.run(t, podID, pod, ctrConfig("sleeper", e.image("plain"), "sleep", "1000"))
	d.mustCrictl("exec", id, "true")

	fams := scrapeMetrics(t, c)
	for _, w := range []struct {
		name   string
		labels map[string]string
		min    float64
		max    float64
	}{
		{"husk_grpc_server_handled_total", map[string]string{"grpc_method": "RunPodSandbox", "grpc_code": "OK"}, 1, 1},
		{"husk_grpc_server_handled_total", map[string]string{"grpc_method": "PullImage", "grpc_code": "NotFound"}, 1, 1},
		{"husk_grpc_server_handling_seconds", map[string]string{"grpc_method": "StartContainer"}, 1, 1},
		{"husk_pods", map[string]string{"state": "SANDBOX_READY"}, 1, 1},
		{"husk_pods", map[string]string{"state": "SANDBOX_NOTREADY"}, 0, 0},
		{"husk_containers", map[string]string{"state": "CONTAINER_RUNNING"}, 1, 1},
		{"husk_containers", map[string]string{"state": "CONTAINER_EXITED"}, 0, 0},
		{"husk_monitors_running", nil, 1, 1},
		{"husk_images", nil, 1, 1},
		{"husk_image_store_bytes", nil, 1, 1 << 40},
		{"husk_image_pulls_total", nil, 2, 2},
		{"husk_image_pull_failures_total", map[string]string{"reason": "NotFound"}, 1, 1},
		{"husk_image_pull_duration_seconds", nil, 1, 1},
		{"husk_image_pull_bytes_total", nil, 1, 1 << 40},
		{"husk_cni_operation_duration_seconds", map[string]string{"operation": "ADD"}, 1, 10},
		// Opened and closed: the series exists, at 0.
		{"husk_stream_sessions", map[string]string{"kind": "exec"}, 0, 0},
		{"husk_daemon_restore_duration_seconds", nil, 1e-9, 60},
		{"husk_daemon_restarts_total", nil, 0, 0},
		{"go_goroutines", nil, 1, 1e6},
		{"process_resident_memory_bytes", nil, 1, 1 << 40},
	} {
		v, ok := seriesValue(fams, w.name, w.labels)
		if !ok || v < w.min || v > w.max {
			t.Errorf("%s%v = %v (found: %v), want %v to %v", w.name, w.labels, v, ok, w.min, w.max)
		}
	}
	if _, ok := seriesValue(fams, "husk_cni_operation_failures_total", map[string]string{"operation": "ADD"}); ok {
		t.Error("a CNI ADD counted as failed")
	}

	resp, err := c.Get("http://husk/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Errorf("GET /debug/pprof/goroutine: %s, %d bytes", resp.Status, len(body))
	}

	d.restart()
	fams = scrapeMetrics(t, c)
	if v, _ := seriesValue(fams, "husk_daemon_restarts_total", nil); v != 1 {
		t.Errorf("husk_daemon_restarts_total after a restart = %v, want 1", v)
	}
	if v, _ := seriesValue(fams, "husk_pods", map[string]string{"state": "SANDBOX_READY"}); v != 1 {
		t.Errorf("husk_pods{state=SANDBOX_READY} after a restart = %v, want 1", v)
	}
}
