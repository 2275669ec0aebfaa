package image

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/containerd/errdefs"
	"k8s.io/klog/v2"
)

// flightGroup runs one piece of work per key however many callers ask for it
// at once. Unlike x/sync/singleflight, the work gets its own context that is
// cancelled only when every caller waiting for it has gone: kubelet gives
// each PullImage its own deadline, and one impatient caller must not abort a
// pull that others are still waiting for, while a pull nobody waits for any
// more must stop and clean up.
type flightGroup[T any] struct {
	mu      sync.Mutex
	flights map[string]*flight[T]
}

type flight[T any] struct {
	done      chan struct{}
	val       T
	err       error
	waiters   int
	cancel    context.CancelFunc
	abandoned bool
}

// Do runs fn for key unless a run is already in flight, then waits for the
// result or for ctx to end, whichever comes first.
func (g *flightGroup[T]) Do(ctx context.Context, key string, fn func(context.Context) (T, error)) (T, error) {
	g.mu.Lock()
	if g.flights == nil {
		g.flights = make(map[string]*flight[T])
	}
	f, ok := g.flights[key]
	for ok && f.abandoned {
		// A run nobody waits for any more is being torn down: let it
		// finish (its cleanup must not race a fresh run), then start anew.
		g.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
		g.mu.Lock()
		f, ok = g.flights[key]
	}
	if !ok {
		// The work keeps ctx's values (klog, tracing) but not its deadline.
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight[T]{done: make(chan struct{}), cancel: cancel}
		g.flights[key] = f
		go func() {
			// The work runs outside the gRPC handler's recover: a panic on
			// hostile input must fail this call, not the daemon.
			defer func() {
				if r := recover(); r != nil {
					klog.ErrorS(nil, "Panic", "work", key, "panic", r, "stack", string(debug.Stack()))
					f.err = fmt.Errorf("internal error: %v: %w", r, errdefs.ErrInternal)
					g.finish(key, f, cancel)
				}
			}()
			f.val, f.err = fn(wctx)
			g.finish(key, f, cancel)
		}()
	}
	f.waiters++
	g.mu.Unlock()

	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.abandoned = true
			f.cancel()
		}
		g.mu.Unlock()
		var zero T
		return zero, ctx.Err()
	}
}

// wait returns once no run for key is in flight.
func (g *flightGroup[T]) wait(key string) {
	for {
		g.mu.Lock()
		f, ok := g.flights[key]
		g.mu.Unlock()
		if !ok {
			return
		}
		<-f.done
	}
}

func (g *flightGroup[T]) finish(key string, f *flight[T], cancel context.CancelFunc) {
	g.mu.Lock()
	if g.flights[key] == f {
		delete(g.flights, key)
	}
	g.mu.Unlock()
	cancel()
	close(f.done)
}
