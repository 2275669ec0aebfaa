package sandbox

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	"k8s.io/klog/v2"
)

// restoreContainers finds every container again after a (re)start. Their
// monitors kept running without the daemon and recorded any exit; the
// first refresh reads it. A container still Creating is undone; a
// directory without a record is removed.
func (m *Manager) restoreContainers() error {
	entries, err := os.ReadDir(m.containersRoot())
	if err != nil {
		return err
	}
	for _, e := range entries {
		dir := filepath.Join(m.containersRoot(), e.Name())
		c, err := loadContainer(dir)
		if errors.Is(err, fs.ErrNotExist) {
			// Not even recorded: nothing was mounted for it yet, but
			// nothing mounted is removed either.
			if err := unmountBundle(m.bundleDir(e.Name())); err == nil {
				_ = removeTree(m.bundleDir(e.Name()))
			}
			_ = os.RemoveAll(dir)
			continue
		}
		if err != nil {
			klog.ErrorS(err, "Cannot read container record; leaving it alone", "dir", dir)
			continue
		}
		if c.State == ContainerCreating {
			klog.InfoS("Undoing a container whose creation was interrupted", "id", c.ID)
			if err := m.destroyContainer(c); err == nil {
				continue
			}
			c.State = ContainerExited
			c.Exit = &Exit{Code: 128, Reason: "CreateError", Message: "the daemon stopped while creating it"}
		}
		if c.State == ContainerStarting {
			// The daemon died while starting it: the monitor's own file says
			// whether it got going.
			if mon, err := readMonitorProcess(dir); err == nil && alive(mon) {
				c.State, c.Monitor = ContainerStarted, mon
			} else {
				m.failStart(c, "the daemon stopped while starting it")
			}
		}
		m.mu.Lock() // the exit watch runs already
		m.containers[c.ID] = c
		m.cnames[containerKey(c.PodID, c.Config.GetMetadata())] = c.ID
		m.mu.Unlock()
		if c.State == ContainerStarted {
			m.watchExit(c.ID)
		}
		// An exit recorded while the daemon was down is reported now, to
		// the events' first subscriber (events.go).
		m.refresh(c)
		m.watchMonitor(c)
	}
	return nil
}

func (m *Manager) layersInUse() []digest.Digest {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []digest.Digest
	for _, c := range m.containers {
		out = append(out, c.Layers...)
		for _, v := range c.ImageVolumes {
			out = append(out, v.Layers...)
		}
	}
	return out
}

func sortContainers(cs []*Container) {
	slices.SortFunc(cs, func(a, b *Container) int {
		if a.CreatedAt != b.CreatedAt {
			if a.CreatedAt < b.CreatedAt {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
}
