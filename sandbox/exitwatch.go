package sandbox

import (
	"path/filepath"

	"github.com/fsnotify/fsnotify"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/internal/pidwatch"
	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// The daemon reads a container's exit from the file its monitor writes
// (refresh), which a status or a list does when asked. The exit watch
// reads it as soon as the monitor has renamed it into place, so that the
// exit is reported as an event when it happens: one inotify watch per
// running container's directory, dropped when it has exited.
//
// The monitor itself is watched through a pidfd (internal/pidwatch): a
// monitor killed before it wrote the file is noticed as it ends. With
// both watches in place a list takes the container as recorded (listed),
// which is what lets ListContainers, kubelet's relist every second, read
// no file per container; a status still reads the files. Whatever stops
// a watch from telling (a failed Add, an inotify overflow) clears listed,
// and the lists read the files again.

func (m *Manager) startExitWatch() error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	mons, err := pidwatch.New(m.monitorEnded)
	if err != nil {
		_ = w.Close()
		return err
	}
	m.exits, m.monitors = w, mons
	go m.watchExits(w)
	return nil
}

// watchExit starts watching a container for its exit; the caller
// refreshes it afterwards, in case it exited before the watch began.
func (m *Manager) watchExit(id string) {
	err := m.exits.Add(m.containerDir(id))
	if err != nil {
		klog.ErrorS(err, "Watching a container for its exit; it is seen at the next status", "id", id)
	}
	m.mu.Lock()
	if c := m.containers[id]; c != nil {
		c.exitWatched, c.listed = err == nil, false
	}
	m.mu.Unlock()
}

// watchMonitor watches a started container's monitor, once its exit is
// watched; from then on a list takes the container as recorded.
func (m *Manager) watchMonitor(c *Container) {
	m.mu.Lock()
	mon := c.Monitor
	// Set first: the monitor may end as soon as it is watched, and its
	// end must be what clears it.
	c.listed = mon != nil && c.exitWatched && c.State == ContainerStarted
	listed := c.listed
	m.mu.Unlock()
	if !listed {
		return
	}
	if err := m.monitors.Add(c.ID, mon.PID, func() bool { return alive(mon) }); err != nil {
		// Ended already, or no pidfd: the lists read its files.
		klog.V(4).InfoS("Not watching a container's monitor", "id", c.ID, "err", err)
		m.mu.Lock()
		c.listed = false
		m.mu.Unlock()
	}
}

// monitorEnded: a watched monitor ended; its exit file says how the
// container did, or that the monitor died without writing one.
func (m *Manager) monitorEnded(id string) {
	m.mu.Lock()
	c := m.containers[id]
	if c != nil {
		c.listed = false
	}
	m.mu.Unlock()
	if c != nil {
		m.refresh(c)
	}
}

func (m *Manager) watchExits(w *fsnotify.Watcher) {
	for {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if filepath.Base(ev.Name) != monitor.ExitFile || !ev.Has(fsnotify.Create) {
				continue
			}
			dir := filepath.Dir(ev.Name)
			m.mu.Lock()
			c := m.containers[filepath.Base(dir)]
			if c != nil {
				c.exitWatched, c.listed = false, false
			}
			m.mu.Unlock()
			if c != nil {
				m.refresh(c)
			}
			// The directory goes with the container; an error is a
			// watch that went with it.
			_ = w.Remove(dir)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// An overflow loses events, not exits: they are read at the
			// next refresh, which every list makes again.
			klog.ErrorS(err, "Watching containers for their exits")
			m.mu.Lock()
			for _, c := range m.containers {
				c.listed = false
			}
			m.mu.Unlock()
		}
	}
}

// Close stops the exit watch and ends every event subscription: the
// daemon is shutting down. The containers run on.
func (m *Manager) Close() {
	m.closed.Store(true)
	m.events.close()
	if m.exits != nil {
		_ = m.exits.Close()
	}
	if m.monitors != nil {
		m.monitors.Close()
	}
	if m.execs != nil {
		m.execs.Close()
	}
}
