// Package metrics holds the daemon's own Prometheus metrics and serves
// them. The metrics are package variables, as is usual with
// client_golang: the packages that do the work (cri, network, oci/image)
// update them whether or not anything serves them, which costs an atomic
// add; a Server exposes them where the config's [metrics] address says.
// docs/metrics.md lists them.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "husk"

var (
	// ImagePulls counts PullImage calls that reached the store, and
	// ImagePullFailures those that failed, by the gRPC code the client got.
	ImagePulls = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "image", Name: "pulls_total",
		Help: "Image pulls started (PullImage calls that reached the store).",
	})
	ImagePullFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "image", Name: "pull_failures_total",
		Help: "Image pulls that failed, by reason: the gRPC code PullImage answered.",
	}, []string{"reason"})
	ImagePullDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "image", Name: "pull_duration_seconds",
		Help: "Time of successful image pulls, from the request to the image in the store.",
		// 50 ms (cached layers) to some 7 minutes.
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
	})
	ImagePullBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "image", Name: "pull_bytes_total",
		Help: "Compressed layer bytes received from registries, failed pulls included.",
	})

	// CNIDuration and CNIFailures: each CNI operation on a pod's network
	// (ADD, DEL, CHECK of a network list).
	CNIDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "cni", Name: "operation_duration_seconds",
		Help:    "Time of CNI operations on a pod's network, by operation (ADD, DEL, CHECK), failures included.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	}, []string{"operation"})
	CNIFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "cni", Name: "operation_failures_total",
		Help: "CNI operations that failed, by operation (ADD, DEL, CHECK).",
	}, []string{"operation"})

	// StreamSessions: exec, attach and port-forward sessions of the
	// streaming server open now.
	StreamSessions = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "stream", Name: "sessions",
		Help: "Streaming sessions open, by kind (exec, attach, port_forward).",
	}, []string{"kind"})

	// RestoreDuration: how long the daemon took, when it started, to read
	// back its pods and containers.
	RestoreDuration = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "daemon", Name: "restore_duration_seconds",
		Help: "Time the daemon took at its start to restore its pods and containers.",
	})
)

// own are the collectors above, registered by NewRegistry.
func own() []prometheus.Collector {
	return []prometheus.Collector{
		ImagePulls, ImagePullFailures, ImagePullDuration, ImagePullBytes,
		CNIDuration, CNIFailures, StreamSessions, RestoreDuration,
	}
}
