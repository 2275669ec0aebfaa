package monitor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// seqpacketPair is a connected pair of unix seqpacket sockets, as the
// monitor's attach socket gives.
func seqpacketPair(t *testing.T) (client, monitor net.Conn) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "attach")
		defer func() { _ = f.Close() }()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	return conn(fds[0]), conn(fds[1])
}

func TestAttachClientMessages(t *testing.T) {
	client, mon := seqpacketPair(t)
	a := NewAttachConn(client)
	big := bytes.Repeat([]byte("x"), MaxAttachInput+10)
	go func() {
		_ = a.Hello(true)
		_ = a.Resize(80, 24)
		_ = a.Input([]byte("ls\n"))
		_ = a.Input(big)
		_ = a.CloseInput()
	}()
	size := make([]byte, 4)
	binary.NativeEndian.PutUint16(size, 80)
	binary.NativeEndian.PutUint16(size[2:], 24)
	want := [][]byte{
		{AttachHello, 1},
		append([]byte{AttachResize}, size...),
		append([]byte{AttachInput}, "ls\n"...),
		append([]byte{AttachInput}, big[:MaxAttachInput]...),
		append([]byte{AttachInput}, big[MaxAttachInput:]...),
		{AttachClose},
	}
	buf := make([]byte, 1+64<<10)
	for i, w := range want {
		n, err := mon.Read(buf)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], w) {
			t.Errorf("message %d: %q (%d bytes), want %q (%d bytes)", i, buf[:min(n, 16)], n, w[:min(len(w), 16)], len(w))
		}
	}
}

func TestAttachClientReadsOutput(t *testing.T) {
	client, mon := seqpacketPair(t)
	a := NewAttachConn(client)
	for _, msg := range [][]byte{append([]byte{AttachStdout}, "out"...), append([]byte{AttachStderr}, "err"...), {'?', 'x'}} {
		if _, err := mon.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	_ = mon.Close()
	buf := make([]byte, 1+64<<10)
	for _, want := range []struct {
		stream byte
		data   string
	}{{AttachStdout, "out"}, {AttachStderr, "err"}} {
		stream, data, err := a.Next(buf)
		if err != nil || stream != want.stream || string(data) != want.data {
			t.Errorf("Next: %q %q %v; want %q %q", stream, data, err, want.stream, want.data)
		}
	}
	if _, _, err := a.Next(buf); err == nil {
		t.Error("an unknown message was read as output")
	}
	if _, _, err := a.Next(buf); !errors.Is(err, io.EOF) {
		t.Errorf("after the monitor closed: %v", err)
	}
}
