package sandbox

import (
	"path/filepath"

	"github.com/fsnotify/fsnotify"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// The daemon reads a container's exit from the file its monitor writes
// (refresh), which a status or a list does when asked. The exit watch
// reads it as soon as the monitor has renamed it into place, so that the
// exit is reported as an event when it happens: one inotify watch per
// running container's directory, dropped when it has exited. A monitor
// killed before it wrote the file is noticed at the next refresh, as
// before.

func (m *Manager) startExitWatch() error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	m.exits = w
	go m.watchExits(w)
	return nil
}

// watchExit starts watching a container for its exit; the caller
// refreshes it afterwards, in case it exited before the watch began.
func (m *Manager) watchExit(id string) {
	if err := m.exits.Add(m.containerDir(id)); err != nil {
		klog.ErrorS(err, "Watching a container for its exit; it is seen at the next status", "id", id)
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
			// next refresh.
			klog.ErrorS(err, "Watching containers for their exits")
		}
	}
}

// Close stops the exit watch and ends every event subscription: the
// daemon is shutting down. The containers run on.
func (m *Manager) Close() {
	m.events.close()
	if m.exits != nil {
		_ = m.exits.Close()
	}
}
