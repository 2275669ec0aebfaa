package sandbox

import (
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// TestRestoreFromHandMadeRecords: what a daemon finds of its containers
// after a crash, from the records alone: each is known again in the state
// its record and its monitor's files say; a half-written record is left
// alone, a directory without one removed.
func TestRestoreFromHandMadeRecords(t *testing.T) {
	root, state := t.TempDir(), t.TempDir()
	m := &Manager{
		opts:       Options{Root: root, State: state},
		pods:       map[string]*Pod{},
		locks:      map[string]*sync.Mutex{},
		containers: map[string]*Container{},
		cnames:     map[string]string{},
	}
	if err := os.MkdirAll(m.containersRoot(), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := m.startExitWatch(); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	record := func(c *Container) {
		t.Helper()
		c.Config = &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: c.ID + "-name"}}
		b, err := c.encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(m.containerDir(c.ID), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(m.containerDir(c.ID), "container.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	exitFile := func(id, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(m.containerDir(id), monitor.ExitFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A monitor that no longer runs: no process started at the last tick.
	gone := &Process{PID: 1, StartTime: math.MaxUint64, BootID: bootID()}

	record(&Container{ID: "created", PodID: "p", State: ContainerCreated, CreatedAt: 1})
	record(&Container{ID: "ended", PodID: "p", State: ContainerStarted, CreatedAt: 2, StartedAt: 3, Monitor: gone})
	exitFile("ended", "3 1700000000000000000 0\n")
	record(&Container{ID: "oomed", PodID: "p", State: ContainerStarted, CreatedAt: 4, StartedAt: 5, Monitor: gone})
	exitFile("oomed", "137 1700000000000000001 1\n")
	// The monitor died without a word (SIGKILL of its own).
	record(&Container{ID: "lost", PodID: "p", State: ContainerStarted, CreatedAt: 6, StartedAt: 7, Monitor: gone})
	// Half-written: a crash while the record was replaced by hand, or a
	// disk that lost its end.
	if err := os.MkdirAll(m.containerDir("torn"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.containerDir("torn"), "container.json"), []byte(`{"id":"torn","state":"sta`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Not even recorded.
	if err := os.MkdirAll(m.containerDir("unrecorded"), 0o700); err != nil {
		t.Fatal(err)
	}

	if err := m.restoreContainers(); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		state  ContainerState
		code   int32
		reason string
	}{
		"created": {ContainerCreated, 0, ""},
		"ended":   {ContainerExited, 3, "Error"},
		"oomed":   {ContainerExited, 137, "OOMKilled"},
		"lost":    {ContainerExited, 255, "Unknown"},
	}
	if len(m.containers) != len(want) {
		t.Errorf("restored %d containers, want %d", len(m.containers), len(want))
	}
	for id, w := range want {
		c := m.containers[id]
		if c == nil {
			t.Errorf("%s: not restored", id)
			continue
		}
		var code int32
		reason := ""
		if c.Exit != nil {
			code, reason = c.Exit.Code, c.Exit.Reason
		}
		if c.State != w.state || code != w.code || reason != w.reason {
			t.Errorf("%s: %s, exit %d %q; want %s, exit %d %q", id, c.State, code, reason, w.state, w.code, w.reason)
		}
		if m.cnames[containerKey("p", c.Config.GetMetadata())] != id {
			t.Errorf("%s: its name is not known again", id)
		}
	}
	// What a restore learnt is recorded: a second one agrees.
	if c, err := loadContainer(m.containerDir("ended")); err != nil || c.State != ContainerExited || c.Exit == nil || c.Exit.Code != 3 {
		t.Errorf("the exit was not recorded: %+v, %v", c, err)
	}
	if _, err := os.Stat(m.containerDir("torn")); err != nil {
		t.Errorf("a torn record was not left alone for a person to look at: %v", err)
	}
	if _, err := os.Stat(m.containerDir("unrecorded")); !os.IsNotExist(err) {
		t.Errorf("a directory without a record stayed: %v", err)
	}
	// The exits found are events for the first subscriber, once each.
	sub := m.SubscribeEvents()
	defer sub.Close()
	stopped := map[string]int{}
	for len(sub.Events()) > 0 {
		e := <-sub.Events()
		if e.Type != EventStopped || e.PodID != "p" {
			t.Errorf("event %v of %s (pod %s) at restore", e.Type, e.ID, e.PodID)
		}
		stopped[e.ID]++
	}
	if len(stopped) != 3 || stopped["ended"] != 1 || stopped["oomed"] != 1 || stopped["lost"] != 1 {
		t.Errorf("stopped events at restore: %v, want one each of ended, oomed and lost", stopped)
	}
}
