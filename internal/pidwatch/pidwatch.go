// Package pidwatch tells when processes that are not the caller's children
// end: one pidfd per process (Linux 5.3), all in one epoll set that one
// goroutine waits on.
//
// The daemon watches every running container's monitor this way, so that
// a list of containers can take their recorded states as they are instead
// of reading two files per container (see sandbox/exitwatch.go). Written
// here because neither x/sys nor os offers it for a process that is not a
// child: os.Process.Wait works only on children.
package pidwatch

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Watcher calls its ended function with the key of each watched process
// that ends, once, from its own goroutine.
type Watcher struct {
	epfd, wake int
	ended      func(key string)

	mu      sync.Mutex
	next    int32 // the token of the next Add
	byToken map[int32]entry
	byKey   map[string]int32
	closed  bool
}

type entry struct {
	key string
	fd  int
}

// New starts a Watcher.
func New(ended func(key string)) (*Watcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	w := &Watcher{epfd: epfd, wake: wake, ended: ended, next: 1, byToken: map[int32]entry{}, byKey: map[string]int32{}}
	// Token 0 is the wake-up.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		_ = unix.Close(wake)
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	go w.run()
	return w, nil
}

// Add watches pid under key, replacing what key watched. ours is asked
// once the pidfd is open: a pid recorded earlier may name another process
// by now, and only a pidfd opened while it is still the recorded one
// watches the right process. Add fails if the process has ended.
func (w *Watcher) Add(key string, pid int, ours func() bool) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	if !ours() {
		_ = unix.Close(fd)
		return fmt.Errorf("process %d: %w", pid, unix.ESRCH)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		_ = unix.Close(fd)
		return errors.New("pidwatch: closed")
	}
	w.removeLocked(key)
	token := w.next
	w.next++
	// Tokens are never reused, fds are: an event of a removed entry
	// names no entry, not a later one with the same fd.
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: token}); err != nil {
		_ = unix.Close(fd)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	w.byToken[token] = entry{key: key, fd: fd}
	w.byKey[key] = token
	return nil
}

// Remove stops watching key's process, if it is watched.
func (w *Watcher) Remove(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removeLocked(key)
}

func (w *Watcher) removeLocked(key string) {
	token, ok := w.byKey[key]
	if !ok {
		return
	}
	e := w.byToken[token]
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, e.fd, nil)
	_ = unix.Close(e.fd)
	delete(w.byToken, token)
	delete(w.byKey, key)
}

// Len is the number of processes watched.
func (w *Watcher) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byKey)
}

// Close stops the watcher; ended is not called any more once it returns
// from a call in progress.
func (w *Watcher) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	_, _ = unix.Write(w.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
}

func (w *Watcher) run() {
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			klog.ErrorS(err, "Watching processes for their end; they are seen by reading their state instead")
			// Every watched process is reported, as if it had ended:
			// its watcher can no longer say.
			for _, key := range w.shutdown() {
				w.ended(key)
			}
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == 0 {
				w.shutdown()
				return
			}
			w.mu.Lock()
			e, ok := w.byToken[ev.Fd]
			if ok {
				w.removeLocked(e.key)
			}
			w.mu.Unlock()
			if ok {
				w.ended(e.key)
			}
		}
	}
}

// shutdown closes every fd and returns the keys that were watched.
func (w *Watcher) shutdown() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	var keys []string
	for key := range w.byKey {
		keys = append(keys, key)
		w.removeLocked(key)
	}
	_ = unix.Close(w.wake)
	_ = unix.Close(w.epfd)
	return keys
}
