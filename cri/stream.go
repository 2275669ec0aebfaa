package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/husk-runtime/husk/cri/validate"
	"github.com/husk-runtime/husk/internal/metrics"
	"github.com/husk-runtime/husk/sandbox"
)

// StreamServer is the server kubelet and crictl open exec, attach and
// port-forward streams on, on a free port of 127.0.0.1 that it holds from
// the start: the URLs Exec, Attach and PortForward answer carry the port of
// a listener that is already there, and no other process can take it.
type StreamServer struct {
	streaming.Server
	listener net.Listener
	http     *http.Server
}

// NewStreamServer binds the port; Serve serves it.
func NewStreamServer(pods *sandbox.Manager) (*StreamServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = l.Addr().String()
	cfg.BaseURL = &url.URL{Scheme: "http", Host: cfg.Addr}
	s, err := streaming.NewServer(cfg, streamRuntime{pods})
	if err != nil {
		_ = l.Close()
		return nil, err
	}
	return &StreamServer{Server: s, listener: l, http: &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}}, nil
}

// Serve serves streams until Close; it then returns http.ErrServerClosed.
func (s *StreamServer) Serve() error { return s.http.Serve(s.listener) }

// Close ends the server and every stream it serves.
func (s *StreamServer) Close() error { return s.http.Close() }

type streamRuntime struct{ pods *sandbox.Manager }

// terminalSizes passes the streaming server's resize events on as
// sandbox's, until the session ends; nil stays nil.
func terminalSizes(ctx context.Context, resize <-chan remotecommand.TerminalSize) <-chan sandbox.TerminalSize {
	if resize == nil {
		return nil
	}
	sizes := make(chan sandbox.TerminalSize)
	go func() {
		defer close(sizes)
		for s := range resize {
			select {
			case sizes <- sandbox.TerminalSize{Width: s.Width, Height: s.Height}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return sizes
}

// session counts a streaming session open until the returned func runs.
func session(kind string) func() {
	g := metrics.StreamSessions.WithLabelValues(kind)
	g.Inc()
	return g.Dec
}

func (r streamRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	defer session("exec")()
	err := r.pods.Exec(ctx, id, cmd, in, out, errw, tty, terminalSizes(ctx, resize))
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		// The streaming server tells the client the exit code from this.
		return utilexec.CodeExitError{Err: err, Code: ee.ExitCode()}
	}
	return err
}

func (r streamRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	defer session("attach")()
	return r.pods.Attach(ctx, id, in, out, errw, tty, terminalSizes(ctx, resize))
}

func (r streamRuntime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	defer session("port_forward")()
	return r.pods.PortForward(ctx, podID, port, stream)
}

// Exec answers the URL of a stream that runs the command; the container
// must run.
func (s *Server) Exec(_ context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id", "is required")
	}
	if err := validate.Command("cmd", req.GetCmd()); err != nil {
		return nil, err
	}
	if !req.GetStdout() && !req.GetStderr() && !req.GetStdin() {
		return nil, invalid("stdin, stdout, stderr", "one must be requested")
	}
	if _, err := s.pods.ContainerPID(req.GetContainerId()); err != nil {
		return nil, err
	}
	return s.stream.GetExec(req)
}

// Attach answers the URL of a stream to a running container's standard
// streams (its monitor's, oci/runtime/shim/monitor.c).
func (s *Server) Attach(_ context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id", "is required")
	}
	if !req.GetStdout() && !req.GetStderr() && !req.GetStdin() {
		return nil, invalid("stdin, stdout, stderr", "one must be requested")
	}
	c, err := s.pods.GetContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if req.GetStdin() && !c.Config.GetStdin() {
		return nil, invalid("stdin", "container %s was not created with stdin", c.ID)
	}
	if req.GetTty() != c.Config.GetTty() {
		return nil, invalid("tty", "must match the container's (%v)", c.Config.GetTty())
	}
	if _, err := s.pods.ContainerPID(c.ID); err != nil {
		return nil, err
	}
	return s.stream.GetAttach(req)
}

// PortForward answers the URL of a stream to the pod's ports; the pod must
// be ready.
func (s *Server) PortForward(_ context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id", "is required")
	}
	p, err := s.pods.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if !p.Ready() {
		return nil, fmt.Errorf("pod sandbox %s is not ready: %w", p.ID, errdefs.ErrFailedPrecondition)
	}
	return s.stream.GetPortForward(req)
}
