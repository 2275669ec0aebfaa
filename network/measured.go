package network

import (
	"context"
	"errors"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/husk-runtime/husk/internal/metrics"
)

// measuredCNI is libcni with each operation on a network list timed and
// its failures counted (internal/metrics).
type measuredCNI struct{ *libcni.CNIConfig }

func measure(op string, start time.Time, err error) {
	metrics.CNIDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		metrics.CNIFailures.WithLabelValues(op).Inc()
	}
}

func (c measuredCNI) AddNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	start := time.Now()
	res, err := c.CNIConfig.AddNetworkList(ctx, list, rt)
	measure("ADD", start, err)
	return res, err
}

func (c measuredCNI) DelNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	start := time.Now()
	err := c.CNIConfig.DelNetworkList(ctx, list, rt)
	measure("DEL", start, err)
	return err
}

// CheckNetworkList: a network whose plugins do not check counts as no
// failure.
func (c measuredCNI) CheckNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	start := time.Now()
	err := c.CNIConfig.CheckNetworkList(ctx, list, rt)
	failed := err
	if errors.Is(err, libcni.ErrorCheckNotSupp) {
		failed = nil
	}
	measure("CHECK", start, failed)
	return err
}
