package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"

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

// listenMetrics opens the metrics listener, if any, at the daemon's start
// beside the CRI socket: a unix socket is made as the CRI's is, under a
// umask no other goroutine may be creating files during.
func listenMetrics(m MetricsConfig) (net.Listener, error) {
	if m.Address == "" {
		return nil, nil
	}
	if path, ok := strings.CutPrefix(m.Address, "unix://"); ok {
		return cri.Listen(path)
	}
	lis, err := net.Listen("tcp", m.Address)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return lis, nil
}

// serveMetrics serves the registry of the daemon's metrics on lis, if
// any, until stop, and gives the CRI's call metrics to record into (nil
// without a listener: no cost when off).
func serveMetrics(lis net.Listener, cfg Config, srv *cri.Server, restarts int) (calls *grpcprom.ServerMetrics, stop func(), err error) {
	if lis == nil {
		return nil, func() {}, nil
	}
	calls = cri.NewCallMetrics()
	reg, err := metrics.NewRegistry(srv.Collector(), calls,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "husk_daemon_restarts_total",
			Help: "Starts of the daemon but the first since its state directory was made (on a tmpfs: since boot).",
		}, func() float64 { return float64(restarts) }))
	if err != nil {
		return nil, nil, err
	}
	s := metrics.NewServer(lis, reg, cfg.Debug.Pprof)
	go s.Serve()
	return calls, func() { _ = s.Close() }, nil
}

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
