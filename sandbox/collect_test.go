package sandbox

import (
	"testing"
	"time"
)

// A sample is kept only for a pod or container still known, taken while
// young enough, and dropped with what it belongs to.
func TestSampleCacheKeepsOnlyKnown(t *testing.T) {
	m := &Manager{pods: map[string]*Pod{"pod": {}}, containers: map[string]*Container{"ctr": {}}}
	now := time.Now()
	keep(m, &m.used, "pod", now, Usage{Timestamp: 1})
	keep(m, &m.used, "ctr", now, Usage{Timestamp: 2})
	keep(m, &m.used, "gone", now, Usage{Timestamp: 3})
	if n := m.used.len(); n != 2 {
		t.Errorf("%d samples kept, want 2 (none of an unknown id)", n)
	}
	if u, ok := m.used.get("ctr", time.Minute); !ok || u.Timestamp != 2 {
		t.Errorf("ctr: %v %v", u, ok)
	}
	if _, ok := m.used.get("ctr", 0); ok {
		t.Error("a Fresh call (max age 0) took a sample")
	}
	m.containers["old"] = &Container{}
	keep(m, &m.used, "old", now.Add(-time.Hour), Usage{Timestamp: 4})
	if _, ok := m.used.get("old", time.Minute); ok {
		t.Error("an hour-old sample taken for one a minute old")
	}
	// An older sample does not replace a newer one.
	keep(m, &m.used, "ctr", now.Add(-time.Hour), Usage{Timestamp: 4})
	if u, _ := m.used.get("ctr", time.Minute); u.Timestamp != 2 {
		t.Errorf("an older sample replaced a newer one: %v", u)
	}
	delete(m.containers, "old")
	m.used.forget("old")
	// A sample read before an update of the limits is not kept after it.
	m.forgetUse("ctr")
	keep(m, &m.used, "ctr", now, Usage{Timestamp: 5})
	if _, ok := m.used.get("ctr", time.Minute); ok {
		t.Error("a sample read before forgetUse kept after it")
	}
	keep(m, &m.used, "ctr", time.Now(), Usage{Timestamp: 6})
	if u, ok := m.used.get("ctr", time.Minute); !ok || u.Timestamp != 6 {
		t.Errorf("a sample read after forgetUse: %v %v", u, ok)
	}
	m.samples = map[string][2]cpuSample{"ctr": {}, "pod": {}}
	keep(m, &m.layers, "ctr", now, layerSample{bytes: 1})
	m.forgetSampled("ctr")
	if _, ok := m.samples["ctr"]; ok || m.used.len() != 1 || m.layers.len() != 0 {
		t.Errorf("after forgetSampled: cpu samples %v, %d uses, %d layers", m.samples, m.used.len(), m.layers.len())
	}
}

func TestMaxAge(t *testing.T) {
	m := &Manager{opts: Options{StatsMaxAge: 30 * time.Second}}
	if m.maxAge(Fresh) != 0 || m.maxAge(Sampled) != 30*time.Second {
		t.Errorf("maxAge: Fresh %v, Sampled %v", m.maxAge(Fresh), m.maxAge(Sampled))
	}
	m.opts.StatsMaxAge = 0
	if m.maxAge(Sampled) != 0 {
		t.Errorf("stats_max_age 0: Sampled takes %v-old samples", m.maxAge(Sampled))
	}
}

// Calls that come before a new sample starts share it; a call after it
// started gets another.
func TestResamplerRunsOnceForCallsBeforeIt(t *testing.T) {
	m := &Manager{opts: Options{StatsMaxAge: time.Minute}}
	var r resampler
	runs := make(chan time.Time, 10)
	sample := func() { runs <- time.Now() }
	asked := time.Now()
	for range 3 {
		r.ask(m, sample)
	}
	first := <-runs
	if first.Sub(asked) < resampleAfter {
		t.Errorf("sampled %v after the call, before resampleAfter", first.Sub(asked))
	}
	r.ask(m, sample)
	<-runs
	select {
	case <-runs:
		t.Error("more samples than asks after each start")
	case <-time.After(2 * resampleAfter):
	}
	m.closed.Store(true)
	r.ask(m, sample)
	select {
	case <-runs:
		t.Error("sampled after Close")
	case <-time.After(2 * resampleAfter):
	}
}
