package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// NewRegistry is a registry of husk's own metrics, the Go runtime's and
// the process's, and the collectors given (the CRI server's, the daemon's
// objects).
func NewRegistry(extra ...prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	all := append(own(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range append(all, extra...) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return reg, nil
}

// Server serves /metrics, and /debug/pprof/ when asked, on its own
// listener.
type Server struct {
	http *http.Server
	lis  net.Listener
}

// NewServer serves reg on lis (Listen's), with Go's profiles if asked.
func NewServer(lis net.Listener, reg *prometheus.Registry, withPprof bool) *Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return &Server{
		http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		lis:  lis,
	}
}

// Serve serves until Close.
func (s *Server) Serve() {
	if err := s.http.Serve(s.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		klog.ErrorS(err, "Metrics server stopped")
	}
}

// Close stops serving.
func (s *Server) Close() error { return s.http.Close() }
