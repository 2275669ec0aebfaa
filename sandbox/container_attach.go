package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// Attach connects to a running container's standard streams, as kubectl
// attach does: its output from now on goes to out (and errw), and, for a
// container created with stdin, what in gives becomes its input. With tty
// (which must be the container's), the output is the terminal's and
// resize sizes it. It returns when the container's streams end, or when ctx
// is done.
func (m *Manager) Attach(ctx context.Context, id string, in io.Reader, out, errw io.Writer, tty bool, resize <-chan TerminalSize) error {
	c, err := m.GetContainer(id)
	if err != nil {
		return err
	}
	if m.running(c) == nil {
		return fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	if in != nil && !c.Config.GetStdin() {
		return fmt.Errorf("stdin: container %s was not created with stdin: %w", c.ID, errdefs.ErrInvalidArgument)
	}
	if tty != c.Config.GetTty() {
		return fmt.Errorf("tty: %v, but container %s was created with tty %v: %w", tty, c.ID, c.Config.GetTty(), errdefs.ErrInvalidArgument)
	}
	conn, err := m.dialAttach(c.ID)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	a := monitor.NewAttachConn(conn)
	if err := a.Hello(in != nil); err != nil {
		return fmt.Errorf("attaching to container %s: %w", c.ID, err)
	}
	// With a terminal, the client's first size goes before its input (or
	// after a second without one): kubectl and crictl send it as soon as
	// the stream is up, and a program that reads a line and then asks
	// for its size must see the client's.
	sized := make(chan struct{})
	var sizedOnce sync.Once
	markSized := func() { sizedOnce.Do(func() { close(sized) }) }
	if !tty || resize == nil {
		markSized()
	}
	if in != nil {
		go func() {
			select {
			case <-sized:
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			sendInput(a, in)
		}()
	}
	if resize != nil {
		go func() {
			defer markSized()
			for s := range resize {
				if a.Resize(s.Width, s.Height) != nil {
					return
				}
				markSized()
			}
		}()
	}
	return m.copyAttached(ctx, c, a, out, errw)
}

// sendInput sends what the client types to the container until its input
// ends, then says so.
func sendInput(a *monitor.AttachConn, in io.Reader) {
	buf := make([]byte, monitor.MaxAttachInput)
	for {
		n, err := in.Read(buf)
		if n > 0 && a.Input(buf[:n]) != nil {
			return
		}
		if err != nil {
			_ = a.CloseInput()
			return
		}
	}
}

// copyAttached copies the container's output to the client until the
// monitor or ctx ends the attach.
func (m *Manager) copyAttached(ctx context.Context, c *Container, a *monitor.AttachConn, out, errw io.Writer) error {
	buf := make([]byte, 1+64<<10)
	for {
		stream, data, err := a.Next(buf)
		if err != nil {
			// A closed connection of ours is ctx's end. The monitor
			// closes it when the container ended (its exit recorded
			// first), or when this client did not keep up with the
			// output: that is an error the client must hear of.
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if now, err := m.GetContainer(c.ID); err == nil && m.running(now) != nil {
				return fmt.Errorf("attach to container %s ended: the client did not keep up with the container's output", c.ID)
			}
			return nil
		}
		// A stream the client did not ask for is dropped.
		w := out
		if stream == monitor.AttachStderr {
			w = errw
		}
		if w != nil {
			if _, err := w.Write(data); err != nil {
				return err
			}
		}
	}
}

func (m *Manager) dialAttach(id string) (*net.UnixConn, error) {
	dir, err := os.OpenFile(m.containerDir(id), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = dir.Close() }()
	addr := &net.UnixAddr{Net: "unixpacket", Name: filepath.Join("/proc/self/fd", strconv.Itoa(int(dir.Fd())), monitor.AttachSocket)}
	conn, err := net.DialUnix("unixpacket", nil, addr)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
		return nil, fmt.Errorf("container %s cannot be attached to: its monitor has no attach socket (it ended, or it predates attach): %w", id, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, fmt.Errorf("attaching to container %s: %w", id, err)
	}
	return conn, nil
}
