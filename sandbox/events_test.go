package sandbox

import (
	"fmt"
	"testing"
	"time"
)

func event(i int) Event {
	return Event{Type: EventStarted, ID: fmt.Sprint(i), At: time.Now().UnixNano()}
}

func receive(t *testing.T, s *Subscription) Event {
	t.Helper()
	select {
	case e := <-s.Events():
		return e
	default:
		t.Fatal("no event waiting")
		return Event{}
	}
}

func TestEventsReachEverySubscriberInOrder(t *testing.T) {
	var h events
	a, b := h.subscribe(), h.subscribe()
	defer a.Close()
	defer b.Close()
	for i := range 3 {
		h.publish(event(i))
	}
	for _, s := range []*Subscription{a, b} {
		for i := range 3 {
			if e := receive(t, s); e.ID != fmt.Sprint(i) {
				t.Fatalf("event %d is %q", i, e.ID)
			}
		}
	}
}

func TestEventsWhileNobodyListensGoToTheNextSubscriber(t *testing.T) {
	var h events
	stale := event(0)
	stale.At = time.Now().Add(-2 * backlogAge).UnixNano()
	h.publish(stale)
	h.publish(event(1))
	first := h.subscribe()
	defer first.Close()
	if e := receive(t, first); e.ID != "1" {
		t.Fatalf("first subscriber got %q first, want the recent event 1 (the stale one is dropped)", e.ID)
	}
	second := h.subscribe()
	defer second.Close()
	select {
	case e := <-second.Events():
		t.Fatalf("the backlog was given twice: %q", e.ID)
	default:
	}
}

func TestEventBacklogKeepsTheNewest(t *testing.T) {
	var h events
	for i := range backlogSize + 10 {
		h.publish(event(i))
	}
	s := h.subscribe()
	defer s.Close()
	if e := receive(t, s); e.ID != "10" {
		t.Fatalf("oldest kept is %q, want 10", e.ID)
	}
	if n := len(s.Events()); n != backlogSize-1 {
		t.Fatalf("%d more events kept, want %d", n, backlogSize-1)
	}
}

func TestSlowSubscriberIsDroppedAndNeverBlocks(t *testing.T) {
	var h events
	slow, fast := h.subscribe(), h.subscribe()
	defer slow.Close()
	defer fast.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2 * (subscriberBuffer + backlogSize) {
			h.publish(event(i))
			<-fast.Events()
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("publishing blocked on a subscriber that does not read")
	}
	select {
	case <-slow.Done():
	default:
		t.Fatal("the subscriber that never read is still subscribed")
	}
	if !slow.Dropped() {
		t.Error("the slow subscriber's end is not reported as dropped")
	}
	select {
	case <-fast.Done():
		t.Fatal("the subscriber that kept up was dropped")
	default:
	}
	if fast.Dropped() {
		t.Error("the subscriber that kept up is reported dropped")
	}
}

func TestClosedEventsEndSubscriptions(t *testing.T) {
	var h events
	s := h.subscribe()
	h.close()
	select {
	case <-s.Done():
	default:
		t.Fatal("a subscription outlived the events' close")
	}
	if s.Dropped() {
		t.Error("a shutdown is reported as falling behind")
	}
	late := h.subscribe()
	select {
	case <-late.Done():
	default:
		t.Fatal("a subscription made after close is open")
	}
	s.Close() // after the end: no panic
}
