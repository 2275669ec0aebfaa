package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/containerd/errdefs"

	"github.com/husk-runtime/husk/network/ns"
)

// PortForward connects stream to a TCP port of a ready pod, as kubectl
// port-forward: a connection to localhost made inside the pod's network
// namespace.
func (m *Manager) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	defer func() { _ = stream.Close() }()
	p, err := m.Get(podID)
	if err != nil {
		return err
	}
	if !p.Ready() {
		return fmt.Errorf("pod sandbox %s is not ready: %w", p.ID, errdefs.ErrFailedPrecondition)
	}
	if port <= 0 || port > 65535 {
		return fmt.Errorf("port %d: %w", port, errdefs.ErrInvalidArgument)
	}
	var conn net.Conn
	dial := func() error {
		var d net.Dialer
		var err error
		for _, addr := range []string{"127.0.0.1", "::1"} {
			if conn, err = d.DialContext(ctx, "tcp", net.JoinHostPort(addr, strconv.Itoa(int(port)))); err == nil {
				return nil
			}
		}
		return err
	}
	if netns, ok := p.Namespaces[ns.Net]; ok {
		err = ns.Do(map[ns.Type]string{ns.Net: netns}, dial)
	} else {
		err = dial()
	}
	if err != nil {
		return fmt.Errorf("connecting to port %d of pod %s: %w", port, p.ID, err)
	}
	defer func() { _ = conn.Close() }()
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(stream, conn)
		done <- struct{}{}
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}
