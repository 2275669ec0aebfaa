package metrics

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// Listen listens on address: "host:port", or "unix://PATH", a socket only
// root may use. The socket is bound in a private directory beside PATH
// and renamed into place, so that it is never open to others and the
// process's umask, which every goroutine shares, is not touched: the
// daemon may open it at any time (a config reload). What is at PATH is
// replaced only if it is a socket.
func Listen(address string) (net.Listener, error) {
	path, ok := strings.CutPrefix(address, "unix://")
	if !ok {
		return net.Listen("tcp", address)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".metrics-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	bound := filepath.Join(tmp, "sock")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// Its name changes: the listener must not unlink the old one, and
	// Close removes the new one itself.
	lis.SetUnlinkOnClose(false)
	if err := os.Chmod(bound, 0o600); err != nil {
		_ = lis.Close()
		return nil, err
	}
	if err := os.Rename(bound, path); err != nil {
		_ = lis.Close()
		return nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		_ = lis.Close()
		return nil, err
	}
	return &unixListener{UnixListener: lis, path: path, file: fi}, nil
}

type unixListener struct {
	*net.UnixListener
	path string
	file os.FileInfo // the socket as made, to remove it and nothing else
}

// Close removes the socket, unless another took its path meanwhile (a
// reload that listens on the same path before closing the old one).
func (l *unixListener) Close() error {
	if fi, err := os.Lstat(l.path); err == nil && os.SameFile(fi, l.file) {
		_ = os.Remove(l.path)
	}
	err := l.UnixListener.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
