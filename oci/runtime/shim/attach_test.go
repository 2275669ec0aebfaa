package shim

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// TestMonitorAttachServer: the monitor's attach server (C) and package
// monitor's client (Go) speak the same protocol: input reaches the
// program's stdin, output reaches the client by stream, and with
// --stdin-once the client's close ends the program's input.
func TestMonitorAttachServer(t *testing.T) {
	dir := t.TempDir()
	lfd := attachListen(dir)
	if lfd < 0 {
		t.Fatal("the monitor could not listen on its attach socket")
	}
	defer func() { _ = unix.Close(lfd) }()
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stdinR.Close() }()
	// The monitor's end of the program's stdin: its own descriptor, which
	// it closes at the end of input.
	wfd, err := unix.Dup(int(stdinW.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	_ = stdinW.Close()
	if err := unix.SetNonblock(wfd, true); err != nil {
		t.Fatal(err)
	}
	attachSetStdin(wfd, false, true)

	conn, err := net.Dial("unixpacket", filepath.Join(dir, monitor.AttachSocket))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	a := monitor.NewAttachConn(conn)
	attachStep(lfd, -1, 1000) // accepts the client
	if err := a.Hello(true); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("y"), monitor.MaxAttachInput+100)
	want := append([]byte("hello\n"), big...)
	if err := a.Input([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if err := a.Input(big); err != nil {
		t.Fatal(err)
	}
	if err := a.CloseInput(); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(stdinR)
		got <- b
	}()
	deadline := time.Now().Add(10 * time.Second)
	var in []byte
	for in == nil && time.Now().Before(deadline) {
		attachStep(lfd, -1, 50)
		select {
		case in = <-got:
		default:
		}
	}
	if !bytes.Equal(in, want) {
		t.Errorf("the program's stdin read %d bytes (%q...), want %d: input lost, or stdin not closed at the client's close", len(in), in[:min(len(in), 8)], len(want))
	}

	attachOutput(monitor.AttachStdout, []byte("to stdout"))
	attachOutput(monitor.AttachStderr, []byte("to stderr"))
	buf := make([]byte, 1+64<<10)
	for _, w := range []struct {
		stream byte
		data   string
	}{{monitor.AttachStdout, "to stdout"}, {monitor.AttachStderr, "to stderr"}} {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		stream, data, err := a.Next(buf)
		if err != nil || stream != w.stream || string(data) != w.data {
			t.Errorf("output: %q %q %v; want %q %q", stream, data, err, w.stream, w.data)
		}
	}
}
