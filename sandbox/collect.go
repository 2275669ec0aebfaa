package sandbox

import (
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// Age is how old a sample of a pod's or a container's use may be for a
// stats call to take it.
type Age int

const (
	// Fresh: read now. The calls about one pod or one container, which a
	// person with crictl makes after changing something.
	Fresh Age = iota
	// Sampled: the last sample while it is at most StatsMaxAge old, else
	// read now; and a new sample is taken in the background after the
	// call. The node-wide Lists kubelet polls: at 250 pods, reading every
	// cgroup when asked took 50 to 500 ms a call.
	Sampled
)

// maxAge is how old a sample a call of age a takes; 0 for none.
func (m *Manager) maxAge(a Age) time.Duration {
	if a == Fresh {
		return 0
	}
	return m.opts.StatsMaxAge
}

// resampleAfter is how long after a Sampled call its new sample is
// taken: the calls of one kubelet scrape (ListContainerStats, then
// ListPodSandboxStats) come within it and share one, and `crictl stats`,
// which wants a newer CPU sample from its second List a second after the
// first, gets one.
const resampleAfter = 500 * time.Millisecond

// resampler takes one new sample of everything, resampleAfter after the
// first call that asks since the last one started.
type resampler struct {
	mu        sync.Mutex
	scheduled bool
}

// ask schedules a run of sample unless one is scheduled that has not
// started: that one reads after this call too.
func (r *resampler) ask(m *Manager, sample func()) {
	if m.opts.StatsMaxAge <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.scheduled {
		return
	}
	r.scheduled = true
	time.AfterFunc(resampleAfter, func() {
		r.mu.Lock()
		r.scheduled = false
		r.mu.Unlock()
		if !m.closed.Load() {
			sample()
		}
	})
}

// timed is a sample and when it was read; not valid, when the last one
// was dropped (invalidate).
type timed[T any] struct {
	at    time.Time
	v     T
	valid bool
}

// sampleCache keeps the latest sample of each container and pod, by id
// (container and pod ids are both random, so one map holds both).
type sampleCache[T any] struct {
	mu sync.Mutex
	m  map[string]timed[T]
}

// get is id's sample if it is at most maxAge old.
func (c *sampleCache[T]) get(id string, maxAge time.Duration) (T, bool) {
	var zero T
	if maxAge <= 0 {
		return zero, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[id]
	if !ok || !s.valid || time.Since(s.at) > maxAge {
		return zero, false
	}
	return s.v, true
}

// put keeps a sample read at at, unless what is kept is newer: a sample
// read before an invalidate is not kept after it.
func (c *sampleCache[T]) put(id string, at time.Time, v T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]timed[T]{}
	}
	if old, ok := c.m[id]; ok && old.at.After(at) {
		return
	}
	c.m[id] = timed[T]{at: at, v: v, valid: true}
}

// invalidate drops id's sample and refuses those read before now.
func (c *sampleCache[T]) invalidate(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m != nil {
		c.m[id] = timed[T]{at: time.Now()}
	}
}

func (c *sampleCache[T]) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

func (c *sampleCache[T]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// keep stores a sample of id's only while the pod or container is known:
// forgetContainer and forget drop its samples under m.mu, so a sample
// read while it was being removed is not kept for ever.
func keep[T any](m *Manager, c *sampleCache[T], id string, at time.Time, v T) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ctr := m.containers[id]
	_, pod := m.pods[id]
	if ctr || pod {
		c.put(id, at, v)
	}
}

// forgetSampled drops what was sampled of a removed pod or container.
// The caller holds m.mu, so that no sample read before is kept after
// (keep).
func (m *Manager) forgetSampled(id string) {
	m.used.forget(id)
	m.metricSeries.forget(id)
	m.layers.forget(id)
	m.samplesMu.Lock()
	delete(m.samples, id)
	m.samplesMu.Unlock()
}

// forgetUse drops the sampled use and series of a pod or container whose
// limits changed, so that the Lists' next answer has the new ones, and a
// sample read before (a resample under way) is not kept; its CPU samples
// stay for the rate. The caller holds m.mu.
func (m *Manager) forgetUse(id string) {
	m.used.invalidate(id)
	m.metricSeries.invalidate(id)
}

// sampleUsage reads every running container's and ready pod's use.
func (m *Manager) sampleUsage() {
	for _, c := range m.ListContainers() {
		if c.State == ContainerStarted {
			if _, err := m.UsageOf(c, Fresh); err != nil {
				klog.V(4).InfoS("Stats: sampling a container", "id", c.ID, "err", err)
			}
		}
	}
	for _, p := range m.List() {
		if p.Ready() {
			if _, err := m.PodUsageOf(p, Fresh); err != nil {
				klog.V(4).InfoS("Stats: sampling a pod", "pod", p.ID, "err", err)
			}
		}
	}
}

// sampleMetrics builds every ready pod's and running container's series.
func (m *Manager) sampleMetrics() {
	_ = m.podMetrics(Fresh)
}

// metricsOf is a container's or pod's series: sampled, or built by build
// and kept.
func (m *Manager) metricsOf(id string, a Age, build func() ([]*runtimeapi.Metric, error)) ([]*runtimeapi.Metric, error) {
	if ms, ok := m.metricSeries.get(id, m.maxAge(a)); ok {
		return ms, nil
	}
	at := time.Now()
	ms, err := build()
	if err != nil {
		return nil, err
	}
	keep(m, &m.metricSeries, id, at, ms)
	return ms, nil
}
