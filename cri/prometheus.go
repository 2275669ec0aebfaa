package cri

import (
	"context"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// NewCallMetrics are the per-method metrics of the CRI's calls
// (husk_grpc_server_*): a count by gRPC code and a latency histogram.
// NewGRPCServer records into them when they are given.
func NewCallMetrics() *grpcprom.ServerMetrics {
	return grpcprom.NewServerMetrics(
		grpcprom.WithServerCounterOptions(grpcprom.WithNamespace("husk")),
		grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramNamespace("husk"),
			// 1 ms (a List) to some 2 minutes (a pull of a large image).
			grpcprom.WithHistogramBuckets(prometheus.ExponentialBuckets(0.001, 2, 18))))
}

var (
	podsDesc = prometheus.NewDesc("husk_pods",
		"Pod sandboxes, by CRI state (SANDBOX_READY, SANDBOX_NOTREADY).", []string{"state"}, nil)
	containersDesc = prometheus.NewDesc("husk_containers",
		"Containers, by CRI state (CONTAINER_CREATED, CONTAINER_RUNNING, CONTAINER_EXITED, CONTAINER_UNKNOWN).", []string{"state"}, nil)
	monitorsDesc = prometheus.NewDesc("husk_monitors_running",
		"Container monitors running: one per running container.", nil, nil)
	imagesDesc = prometheus.NewDesc("husk_images",
		"Images in the store.", nil, nil)
	storeBytesDesc = prometheus.NewDesc("husk_image_store_bytes",
		"Bytes the image store's layers and blobs take on its filesystem.", nil, nil)
)

// Collector gives the daemon's pods, containers and images, counted when
// scraped from what List calls see.
func (s *Server) Collector() prometheus.Collector { return objects{s} }

type objects struct{ s *Server }

func (o objects) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{podsDesc, containersDesc, monitorsDesc, imagesDesc, storeBytesDesc} {
		ch <- d
	}
}

func (o objects) Collect(ch chan<- prometheus.Metric) {
	pods := map[string]int{}
	for _, p := range o.s.pods.List() {
		pods[podState(p).String()]++
	}
	containers := map[string]int{}
	for _, c := range o.s.pods.ListContainers() {
		containers[containerState(c).String()]++
	}
	// Every state, seen or not: a series that vanishes at zero reads as
	// missing data rather than as none.
	for _, st := range []runtimeapi.PodSandboxState{runtimeapi.PodSandboxState_SANDBOX_READY, runtimeapi.PodSandboxState_SANDBOX_NOTREADY} {
		ch <- prometheus.MustNewConstMetric(podsDesc, prometheus.GaugeValue, float64(pods[st.String()]), st.String())
	}
	for st := range runtimeapi.ContainerState_name {
		name := runtimeapi.ContainerState(st).String()
		ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, float64(containers[name]), name)
	}
	running := containers[runtimeapi.ContainerState_CONTAINER_RUNNING.String()]
	ch <- prometheus.MustNewConstMetric(monitorsDesc, prometheus.GaugeValue, float64(running))
	ch <- prometheus.MustNewConstMetric(imagesDesc, prometheus.GaugeValue, float64(len(o.s.images.List())))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if u, err := o.s.images.Usage(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(storeBytesDesc, prometheus.GaugeValue, float64(u.Bytes))
	}
}
