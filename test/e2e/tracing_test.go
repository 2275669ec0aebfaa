package e2e

import (
	"context"
	"encoding/hex"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// otlpReceiver is an OTLP trace collector in the test: it keeps every span
// it is sent.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// named are the spans of trace whose name starts with prefix.
func (r *otlpReceiver) named(trace []byte, prefix string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if strings.HasPrefix(s.GetName(), prefix) && (trace == nil || string(s.GetTraceId()) == string(trace)) {
			out = append(out, s)
		}
	}
	return out
}

func startOTLPReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{}
	g := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(g, r)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return r, lis.Addr().String()
}

// With [tracing], each CRI call is a span that continues the trace of the
// caller's traceparent header, with spans of its steps below: RunPodSandbox's
// named steps and CNI ADD, StartContainer's monitor, a pull's layers.
func TestTracingSpansContinueTheCallersTrace(t *testing.T) {
	recv, addr := startOTLPReceiver(t)
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "busybox:plain", imagetest.BusyboxImage(t, v1.Config{}))
	d := newDaemon(t, insecureConfig(reg.Host)+"[tracing]\nendpoint = \""+addr+"\"\ninsecure = true\n")
	newPodNet(t, d).install(t, d)
	pullImage(t, d, reg.Ref("busybox:plain"))
	e := &ctrEnv{d: d, reg: reg, logs: t.TempDir()}

	// kubelet's headers when its own tracing is on (W3C trace context).
	traceID := "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	pod := podConfig("traced")
	pod.LogDirectory = e.logs
	resp, err := d.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		t.Fatal(err)
	}
	id := e.create(t, resp.PodSandboxId, pod, ctrConfig("sleeper", e.image("plain"), "sleep", "300"))
	e.start(t, id)

	// The batch of spans goes out at the latest when the daemon stops.
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d.start()
	want, _ := hex.DecodeString(traceID)
	for _, name := range []string{"runtime.v1.RuntimeService/RunPodSandbox", "creating namespaces", "creating the pod cgroup", "CNI ADD"} {
		if len(recv.named(want, name)) == 0 {
			t.Errorf("no span %q in the caller's trace", name)
		}
	}
	for _, name := range []string{"runtime.v1.RuntimeService/StartContainer", "starting the monitor", "runtime.v1.ImageService/PullImage", "pulling layer sha256:"} {
		if len(recv.named(nil, name)) == 0 {
			t.Errorf("no span %q", name)
		}
	}
	if t.Failed() {
		for _, s := range recv.named(nil, "") {
			t.Logf("span %q trace %x", s.GetName(), s.GetTraceId())
		}
	}
}
