package network

import (
	"context"
	"errors"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/husk-runtime/husk/internal/metrics"
	"github.com/husk-runtime/husk/internal/tracing"
)

// measuredCNI is libcni with each operation on a network list timed, its
// failures counted (internal/metrics) and traced (internal/tracing).
type measuredCNI struct{ *libcni.CNIConfig }

// begin starts the measure of an operation on list: a span of the call's
// trace, and a time for the metrics; the func returned ends both.
func begin(ctx context.Context, op string, list *libcni.NetworkConfigList) (context.Context, func(failed error)) {
	start := time.Now()
	ctx, span := tracing.Tracer().Start(ctx, "CNI "+op+" "+list.Name)
	return ctx, func(failed error) {
		metrics.CNIDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
		if failed != nil {
			metrics.CNIFailures.WithLabelValues(op).Inc()
		}
		tracing.End(span, failed)
	}
}

func (c measuredCNI) AddNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	ctx, end := begin(ctx, "ADD", list)
	res, err := c.CNIConfig.AddNetworkList(ctx, list, rt)
	end(err)
	return res, err
}

func (c measuredCNI) DelNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	ctx, end := begin(ctx, "DEL", list)
	err := c.CNIConfig.DelNetworkList(ctx, list, rt)
	end(err)
	return err
}

// CheckNetworkList: a network whose plugins do not check counts as no
// failure.
func (c measuredCNI) CheckNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	ctx, end := begin(ctx, "CHECK", list)
	err := c.CNIConfig.CheckNetworkList(ctx, list, rt)
	failed := err
	if errors.Is(err, libcni.ErrorCheckNotSupp) {
		failed = nil
	}
	end(failed)
	return err
}
