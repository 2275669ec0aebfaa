package sandbox

import (
	"sync"
	"time"
)

// EventType is what happened to a container or a pod: the CRI's four
// kinds of container event (GetContainerEvents).
type EventType int

const (
	EventCreated EventType = iota
	EventStarted
	EventStopped
	EventDeleted
)

func (t EventType) String() string {
	return [...]string{"created", "started", "stopped", "deleted"}[t]
}

// Event is a change of a container's state, or of a pod's: a pod's own
// events carry its id as ID, as containerd sends them (kubelet keys every
// event by the pod's uid).
type Event struct {
	Type  EventType
	ID    string
	PodID string
	At    int64 // ns
	// Pod is the pod as it was when it was deleted, for the pod's own
	// deleted event, whose client builds the pod's status after it is
	// gone; nil for every other event (the client looks the pod up: the
	// events kept for a subscriber stay small).
	Pod *Pod
}

const (
	// subscriberBuffer is how far a subscriber may fall behind before it
	// is dropped: kubelet reads into a channel of 1000 events.
	subscriberBuffer = 1000
	// backlogSize and backlogAge bound the events kept while nobody
	// listens: what happened while the daemon was down (found as it
	// restores its containers) or while kubelet reconnects reaches the next
	// subscriber; older events are stale for a client that relists anyway.
	backlogSize = 1024
	backlogAge  = time.Minute
)

// events hands each event to every subscriber without ever waiting for
// one: a subscriber whose buffer is full is dropped, so a stuck client
// cannot hold up a container operation.
type events struct {
	mu      sync.Mutex
	subs    map[*Subscription]struct{}
	backlog []Event
	closed  bool
}

// Subscription is one client's stream of events.
type Subscription struct {
	h       *events
	c       chan Event
	done    chan struct{}
	dropped bool
	once    sync.Once
}

// Events delivers the events in order.
func (s *Subscription) Events() <-chan Event { return s.c }

// Done is closed when the subscription ends without Close: the subscriber
// fell behind (Dropped) or the daemon is shutting down.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Dropped says whether the subscription ended because the subscriber fell
// behind.
func (s *Subscription) Dropped() bool {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.dropped
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.end()
}

// end removes the subscription; h.mu is held.
func (s *Subscription) end() {
	delete(s.h.subs, s)
	s.once.Do(func() { close(s.done) })
}

func (h *events) subscribe() *Subscription {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &Subscription{h: h, c: make(chan Event, subscriberBuffer+backlogSize), done: make(chan struct{})}
	if h.closed {
		s.end()
		return s
	}
	if h.subs == nil {
		h.subs = map[*Subscription]struct{}{}
	}
	h.subs[s] = struct{}{}
	cutoff := time.Now().Add(-backlogAge).UnixNano()
	for _, e := range h.backlog {
		if e.At >= cutoff {
			s.c <- e
		}
	}
	h.backlog = nil
	return s
}

func (h *events) publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		if len(h.backlog) == backlogSize {
			h.backlog = append(h.backlog[:0], h.backlog[1:]...)
		}
		h.backlog = append(h.backlog, e)
		return
	}
	for s := range h.subs {
		select {
		case s.c <- e:
		default:
			s.dropped = true
			s.end()
		}
	}
}

// close ends every subscription: the daemon is shutting down.
func (h *events) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		s.end()
	}
}

// SubscribeEvents starts a stream of every container's and pod's events
// from now on (and those kept while nobody listened); the caller closes
// it.
func (m *Manager) SubscribeEvents() *Subscription { return m.events.subscribe() }

// emit publishes an event of a container (podID its pod's) or of a pod
// (id == podID). m.mu must not be held.
func (m *Manager) emit(t EventType, id, podID string) {
	e := Event{Type: t, ID: id, PodID: podID, At: time.Now().UnixNano()}
	if t == EventDeleted && id == podID {
		m.mu.Lock()
		if p := m.pods[podID]; p != nil {
			e.Pod = copyPod(p)
		}
		m.mu.Unlock()
	}
	m.events.publish(e)
	if t == EventStopped && id != podID {
		m.nriStopped(id, podID)
	}
}
