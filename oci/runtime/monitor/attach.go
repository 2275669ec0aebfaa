package monitor

import (
	"encoding/binary"
	"fmt"
	"io"
)

// MaxAttachInput is the most input one message carries: the monitor takes
// up to 64 KiB at once (MAX_INPUT in monitor.c), and half leaves room.
const MaxAttachInput = 32 << 10

// AttachConn speaks the attach protocol, the client's side, over a
// connection to a container's AttachSocket (unix seqpacket: a message per
// read and write).
type AttachConn struct {
	conn io.ReadWriter
}

// NewAttachConn frames the attach protocol on conn.
func NewAttachConn(conn io.ReadWriter) *AttachConn { return &AttachConn{conn: conn} }

// Hello is the client's first message: whether it brings input.
func (a *AttachConn) Hello(input bool) error {
	msg := []byte{AttachHello, 0}
	if input {
		msg[1] = 1
	}
	_, err := a.conn.Write(msg)
	return err
}

// Input sends p to the program's stdin, in messages of MaxAttachInput at
// most.
func (a *AttachConn) Input(p []byte) error {
	msg := make([]byte, 1+min(len(p), MaxAttachInput))
	msg[0] = AttachInput
	for len(p) > 0 {
		n := copy(msg[1:], p)
		if _, err := a.conn.Write(msg[:1+n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// CloseInput says the client's input ended.
func (a *AttachConn) CloseInput() error {
	_, err := a.conn.Write([]byte{AttachClose})
	return err
}

// Resize sets the terminal's size.
func (a *AttachConn) Resize(width, height uint16) error {
	msg := []byte{AttachResize, 0, 0, 0, 0}
	binary.NativeEndian.PutUint16(msg[1:], width)
	binary.NativeEndian.PutUint16(msg[3:], height)
	_, err := a.conn.Write(msg)
	return err
}

// Next reads the next output message into buf (1 + 64 KiB holds any the
// monitor sends): its stream, AttachStdout or AttachStderr, and its bytes,
// which are buf's. io.EOF when the monitor closed the connection.
func (a *AttachConn) Next(buf []byte) (stream byte, data []byte, err error) {
	n, err := a.conn.Read(buf)
	if err != nil {
		return 0, nil, err
	}
	if n == 0 {
		return 0, nil, io.EOF
	}
	switch buf[0] {
	case AttachStdout, AttachStderr:
		return buf[0], buf[1:n], nil
	}
	return 0, nil, fmt.Errorf("attach: unknown message %q from the monitor", buf[0])
}
