// Package execserver is the daemon's side of `husk-runtime exec-server`
// (oci/runtime/shim/exec_server.c): one long-lived C process that makes
// ExecSync's commands, so that an exec starts no process but its command.
// Starting `husk-runtime exec-enter` for each exec took 1.5 of its ~7 ms
// here, its fork into the container's PID namespace another 0.6, and its
// exit reaching the daemon 0.5.
//
// The daemon and the server share a SOCK_SEQPACKET socket; each message
// is a request (the struct below, then strings) with the command's
// descriptors. The server answers on a status pipe of each exec's own:
// "pid PID", then "exit CODE" (or "error MESSAGE", or "unusable MESSAGE"
// for a profile it cannot read).
package execserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The contract with exec_server.c (contract.h's EXEC_SERVER_*; shim's
// TestContractAgrees compares them).
const (
	KindExec    = 'x'
	KindKill    = 'k'
	NumFDs      = 5 // stdin, stdout, stderr, the exec profile, the status pipe
	MaxCgroups  = 64
	MaxArgs     = 4096
	MaxMessage  = 128 << 10
	MaxRunning  = 1024
	RequestSize = 20 // sizeof(struct exec_request)
)

// request is contract.h's struct exec_request.
type request struct {
	Kind          byte
	_             [3]byte
	ID            uint32
	PID           int32
	Cgroups, Args uint32
}

// ErrUnavailable says a request did not reach a server, which then
// started nothing: the caller may make the process another way.
var ErrUnavailable = errors.New("exec server unavailable")

// waitDelay is how long output is read once the command ended: what it
// started in the background may hold the pipes open (os/exec's WaitDelay).
const waitDelay = time.Second

// Server starts the exec server on first use, and again if it died.
type Server struct {
	// command is `husk-runtime exec-server`, not started; the server's
	// socket becomes its descriptor 3.
	command func() *exec.Cmd

	mu     sync.Mutex
	conn   *net.UnixConn
	null   *os.File
	closed bool
	// ids names each exec, for a kill.
	ids atomic.Uint32
}

// New is a Server that runs command.
func New(command func() *exec.Cmd) *Server {
	return &Server{command: command}
}

// Exec is a command to run in a running container.
type Exec struct {
	PID     int      // the container's first process
	Cgroups []string // the procs files of the container's cgroups
	Args    []string
	Profile *os.File // the container's exec profile
	Stdout  io.Writer
	Stderr  io.Writer
}

// Run runs e's command and returns its exit code. Cancelling ctx kills
// the command's process group. An error wrapping ErrUnavailable means
// nothing was started.
func (s *Server) Run(ctx context.Context, e Exec) (int, error) {
	id := s.ids.Add(1)
	msg, err := e.message(id)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var pipes [3][2]*os.File // stdout, stderr, status: read and write ends
	defer func() {
		for _, p := range pipes {
			for _, f := range p {
				if f != nil {
					_ = f.Close()
				}
			}
		}
	}()
	for i := range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		pipes[i] = [2]*os.File{r, w}
	}
	if err := s.send(msg, true, pipes[0][1], pipes[1][1], e.Profile, pipes[2][1]); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	for i := range pipes {
		_ = pipes[i][1].Close()
		pipes[i][1] = nil
	}
	var copying sync.WaitGroup
	for i, w := range []io.Writer{e.Stdout, e.Stderr} {
		copying.Go(func() { _, _ = io.Copy(w, pipes[i][0]) })
	}
	code, err := s.wait(ctx, id, pipes[2][0])
	copied := make(chan struct{})
	go func() { copying.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(waitDelay):
		_ = pipes[0][0].Close()
		_ = pipes[1][0].Close()
		<-copied
	}
	return code, err
}

// wait reads the status pipe to the command's end, and kills the command
// once ctx is done.
func (s *Server) wait(ctx context.Context, id uint32, status *os.File) (int, error) {
	lines := make(chan string)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		r := bufio.NewReader(io.LimitReader(status, 4096))
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				readErr <- err
				return
			}
			select {
			case lines <- strings.TrimSuffix(l, "\n"):
			case <-stop:
				return
			}
		}
	}()
	done := ctx.Done()
	var abandon <-chan time.Time
	for {
		select {
		case l := <-lines:
			kind, value, _ := strings.Cut(l, " ")
			n, convErr := strconv.Atoi(value)
			switch {
			case kind == "pid" && convErr == nil:
			case kind == "exit" && convErr == nil:
				return n, nil
			case kind == "error":
				return 0, fmt.Errorf("exec server: %s", value)
			case kind == "unusable":
				// A profile of another layout (a container made by an
				// older husk): nothing ran.
				return 0, fmt.Errorf("%w: %s", ErrUnavailable, value)
			default:
				return 0, fmt.Errorf("exec server: %q", l)
			}
		case err := <-readErr:
			return 0, fmt.Errorf("the exec server ended before the command: %w", err)
		case <-done:
			done = nil
			s.kill(id)
			// A command that cannot die (in a frozen cgroup) does not
			// hold the caller past its deadline.
			abandon = time.After(waitDelay)
		case <-abandon:
			return 0, ctx.Err()
		}
	}
}

func (s *Server) kill(id uint32) {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.NativeEndian, request{Kind: KindKill, ID: id})
	// Without a server, the command died with it.
	_ = s.send(b.Bytes(), false)
}

// message is e's request.
func (e *Exec) message(id uint32) ([]byte, error) {
	if len(e.Cgroups) > MaxCgroups || len(e.Args) == 0 || len(e.Args) > MaxArgs {
		return nil, fmt.Errorf("%d cgroups and %d arguments", len(e.Cgroups), len(e.Args))
	}
	var b bytes.Buffer
	_ = binary.Write(&b, binary.NativeEndian, request{Kind: KindExec, ID: id, PID: int32(e.PID), Cgroups: uint32(len(e.Cgroups)), Args: uint32(len(e.Args))})
	for _, s := range append(append([]string{}, e.Cgroups...), e.Args...) {
		if strings.IndexByte(s, 0) >= 0 {
			return nil, fmt.Errorf("a NUL byte in %q", s)
		}
		b.WriteString(s)
		b.WriteByte(0)
	}
	if b.Len() > MaxMessage {
		return nil, fmt.Errorf("a request of %d bytes", b.Len())
	}
	return b.Bytes(), nil
}

// send sends a request with stdin (/dev/null) and files; if it cannot,
// and restart allows, it starts a new server and tries once more.
func (s *Server) send(msg []byte, restart bool, files ...*os.File) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var fds []int
	if len(files) > 0 {
		if s.null == nil {
			null, err := os.Open(os.DevNull)
			if err != nil {
				return err
			}
			s.null = null
		}
		fds = append(fds, int(s.null.Fd()))
		for _, f := range files {
			fds = append(fds, int(f.Fd()))
		}
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for attempt := 0; ; attempt++ {
		if s.conn == nil {
			if !restart || s.closed {
				return errors.New("no exec server")
			}
			if err := s.startLocked(); err != nil {
				return err
			}
		}
		_, _, err := s.conn.WriteMsgUnix(msg, oob, nil)
		if err == nil {
			return nil
		}
		// A server that died: another, once.
		_ = s.conn.Close()
		s.conn = nil
		if attempt == 1 || !restart {
			return fmt.Errorf("sending to the exec server: %w", err)
		}
	}
}

func (s *Server) startLocked() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("exec server socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "exec-server"), os.NewFile(uintptr(fds[1]), "exec-server")
	defer func() { _ = theirs.Close() }()
	fc, err := net.FileConn(ours)
	_ = ours.Close()
	if err != nil {
		return fmt.Errorf("exec server socket: %w", err)
	}
	conn := fc.(*net.UnixConn)
	cmd := s.command()
	cmd.ExtraFiles = []*os.File{theirs}
	if err := cmd.Start(); err != nil {
		_ = conn.Close()
		return fmt.Errorf("starting the exec server: %w", err)
	}
	s.conn = conn
	// Reaped when it ends (it does when the socket closes); the next
	// request starts another.
	go func() {
		_ = cmd.Wait()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.conn == conn {
			_ = conn.Close()
			s.conn = nil
		}
	}()
	return nil
}

// Close ends the server; what it runs is killed.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
	if s.null != nil {
		_ = s.null.Close()
		s.null = nil
	}
}
