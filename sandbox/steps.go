package sandbox

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/internal/tracing"
)

// steps are the named steps of one RunPodSandbox or CreateContainer: a
// failed one is named in the call's error, and each logs how long it took
// (their latency is a figure husk is measured by).
//
// Undoing is not a list of closures kept here: each call records every
// resource before it makes it, and on failure destroys what its record
// names (destroy, destroyContainer), as restore does with the record a
// crash left. One mechanism serves a failure and a crash.
type steps struct {
	ctx     context.Context // the call's, whose trace each step is a span of
	call    string          // "RunPodSandbox", "CreateContainer"
	subject string          // what the error names: NAMESPACE/NAME of a pod, a container's NAME
	log     []any           // the object's key and value for the log
	last    time.Time
}

func newSteps(ctx context.Context, call, subject string, log ...any) *steps {
	return &steps{ctx: ctx, call: call, subject: subject, log: log, last: time.Now()}
}

// done ends a step: nil if err is, else err with the call and the step
// named.
func (s *steps) done(name string, err error) error {
	// The step's span, from the end of the one before: steps are
	// sequential but for the network's, which ends when it is waited for.
	_, span := tracing.Tracer().Start(s.ctx, name, trace.WithTimestamp(s.last))
	defer tracing.End(span, err)
	if err != nil {
		return fmt.Errorf("%s %s: %s: %w", s.call, s.subject, name, err)
	}
	klog.V(4).InfoS(s.call+" step done", append(s.log, "step", name, "took", time.Since(s.last))...)
	s.last = time.Now()
	return nil
}
