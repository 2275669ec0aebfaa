package image

import (
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/internal/procfs"
)

// Unpacked layers are made durable in the background rather than during
// the pull: a syncfs per layer halves the speed of a pull (it waits for the
// disk to take every byte), and only a power loss or kernel crash can lose
// data that is still in the page cache, never a crash of the daemon.
//
// So each layer records the boot it was written in, and gets a "synced"
// marker once a syncfs after it has completed. A layer found without the
// marker after a reboot may have lost data: it is dropped, the images that
// use it are forgotten, and kubelet pulls them again. The marker is written
// after the sync, so losing it only errs towards a pull too many.

const syncedMarker = "synced"

type syncer struct {
	mu      sync.Mutex
	pending []digest.Digest
	running bool
	closed  bool
	done    sync.WaitGroup
}

// close waits for the syncs in flight; layers queued after it are synced
// at the next start (checkDurability).
func (y *syncer) close() {
	y.mu.Lock()
	y.closed = true
	y.mu.Unlock()
	y.done.Wait()
}

// scheduleSync queues a layer for the background sync.
func (s *Store) scheduleSync(diffID digest.Digest) {
	s.sync.mu.Lock()
	defer s.sync.mu.Unlock()
	s.sync.pending = append(s.sync.pending, diffID)
	if s.sync.running || s.sync.closed {
		return
	}
	s.sync.running = true
	s.sync.done.Add(1)
	go s.syncLoop()
}

func (s *Store) syncLoop() {
	defer s.sync.done.Done()
	for {
		s.sync.mu.Lock()
		batch := s.sync.pending
		s.sync.pending = nil
		if len(batch) == 0 {
			s.sync.running = false
			s.sync.mu.Unlock()
			return
		}
		s.sync.mu.Unlock()
		// The directories are opened before the sync and marked through
		// those handles: a layer collected and unpacked anew meanwhile is
		// another directory, which this sync did not cover.
		dirs := make(map[digest.Digest]*os.File, len(batch))
		for _, d := range batch {
			if f, err := os.Open(s.layerDir(d)); err == nil {
				dirs[d] = f
			}
		}
		err := syncfs(s.dir)
		for d, f := range dirs {
			if err == nil {
				fd, merr := unix.Openat(int(f.Fd()), syncedMarker, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
				if merr == nil {
					_ = unix.Close(fd)
				} else {
					klog.Warningf("image store: marking layer %s durable: %v", d, merr)
				}
			}
			_ = f.Close()
		}
		if err != nil {
			klog.Warningf("image store: syncfs: %v", err)
			s.sync.mu.Lock()
			s.sync.pending = append(s.sync.pending, batch...)
			s.sync.mu.Unlock()
			time.Sleep(time.Second)
		}
	}
}

// checkDurability drops layers that a reboot may have torn, and queues the
// others that still await their sync. It runs before the index is loaded,
// so that images using a dropped layer are forgotten.
func (s *Store) checkDurability() {
	entries, err := os.ReadDir(filepath.Join(s.dir, "layers"))
	if err != nil {
		return
	}
	boot := procfs.BootID()
	for _, e := range entries {
		dir := filepath.Join(s.dir, "layers", e.Name())
		if _, err := os.Stat(filepath.Join(dir, syncedMarker)); err == nil {
			continue
		}
		m, err := readLayerMeta(dir)
		if err == nil && m.BootID == boot && boot != "" {
			s.scheduleSync(m.DiffID)
			continue
		}
		klog.Warningf("image store: layer %s was not yet on disk when the machine went down; dropping it", e.Name())
		// Renamed first, so that a crash while removing cannot leave half a
		// layer under layers/.
		torn := filepath.Join(s.tmpDir(), "torn-"+e.Name())
		if err := os.Rename(dir, torn); err != nil {
			klog.Warningf("image store: dropping layer %s: %v", e.Name(), err)
			continue
		}
		if err := os.RemoveAll(torn); err != nil {
			klog.Warningf("image store: removing layer %s: %v", e.Name(), err)
		}
	}
}
