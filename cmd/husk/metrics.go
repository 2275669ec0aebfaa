package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/cri"
	"github.com/husk-runtime/husk/internal/atomicfile"
	"github.com/husk-runtime/husk/internal/metrics"
)

// MetricsConfig: the daemon's own Prometheus metrics (docs/metrics.md),
// off unless an address is set.
type MetricsConfig struct {
	// Address is "host:port", or "unix://PATH" for a socket only root
	// may use.
	Address string `toml:"address" json:"address"`
}

// DebugConfig: what helps find a fault in the daemon.
type DebugConfig struct {
	// Pprof serves Go's profiles at /debug/pprof/ on the metrics
	// listener.
	Pprof bool `toml:"pprof" json:"pprof"`
}

func validateMetrics(m MetricsConfig, d DebugConfig) error {
	if m.Address == "" {
		if d.Pprof {
			return errors.New("debug.pprof: profiles are served on the metrics listener: set metrics.address")
		}
		return nil
	}
	if path, ok := strings.CutPrefix(m.Address, "unix://"); ok {
		if !filepath.IsAbs(path) {
			return fmt.Errorf("metrics.address: %q: a unix socket's path must be absolute", m.Address)
		}
		return nil
	}
	host, _, err := net.SplitHostPort(m.Address)
	if err != nil {
		return fmt.Errorf("metrics.address: %q is neither host:port nor unix://PATH: %w", m.Address, err)
	}
	// Profiles show the daemon's innards and cost it CPU: for root on
	// the node only.
	if ip := net.ParseIP(host); d.Pprof && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("debug.pprof: profiles are served on loopback or a unix socket only, not on %q", m.Address)
	}
	return nil
}

// metricsEndpoint serves the daemon's metrics where the config says, and
// moves, stops or starts serving when a reload says otherwise. The
// metrics are kept either way; only where they are served changes.
type metricsEndpoint struct {
	reg *prometheus.Registry

	mu    sync.Mutex
	addr  string
	pprof bool
	srv   *metrics.Server
}

// newMetricsEndpoint makes the registry of every metric of the daemon:
// the CRI server's objects, its calls (recorded into calls) and the count
// of restarts.
func newMetricsEndpoint(srv *cri.Server, calls *grpcprom.ServerMetrics, restarts int) (*metricsEndpoint, error) {
	reg, err := metrics.NewRegistry(srv.Collector(), calls,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "husk_daemon_restarts_total",
			Help: "Starts of the daemon but the first since its state directory was made (on a tmpfs: since boot).",
		}, func() float64 { return float64(restarts) }))
	if err != nil {
		return nil, err
	}
	return &metricsEndpoint{reg: reg}, nil
}

// apply serves on m's address, with profiles if d says so. If the new
// listener cannot be made, the old one stays, but for a change of pprof
// alone: the old server must go first to free its address.
func (e *metricsEndpoint) apply(m MetricsConfig, d DebugConfig) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m.Address == e.addr && d.Pprof == e.pprof {
		return nil
	}
	if m.Address == e.addr && e.srv != nil {
		// Only pprof changes: the address must be free to listen again.
		_ = e.srv.Close()
		e.srv, e.addr = nil, ""
	}
	var next *metrics.Server
	if m.Address != "" {
		lis, err := metrics.Listen(m.Address)
		if err != nil {
			return fmt.Errorf("metrics: listening on %q: %w", m.Address, err)
		}
		next = metrics.NewServer(lis, e.reg, d.Pprof)
		go next.Serve()
	}
	if e.srv != nil {
		_ = e.srv.Close()
	}
	e.srv, e.addr, e.pprof = next, m.Address, d.Pprof
	if next != nil {
		klog.InfoS("Serving the daemon's metrics", "address", m.Address, "pprof", d.Pprof)
	}
	return nil
}

func (e *metricsEndpoint) close() { _ = e.apply(MetricsConfig{}, DebugConfig{}) }

// countStart adds this start to the count kept in the state directory and
// returns how many came before it; 0 if the count cannot be kept.
func countStart(state string) int {
	file := filepath.Join(state, "starts")
	before := 0
	if b, err := os.ReadFile(file); err == nil {
		before, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	_ = atomicfile.Write(file, []byte(strconv.Itoa(before+1)+"\n"), 0o600, atomicfile.Options{})
	return before
}
