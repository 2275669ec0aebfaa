package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// maxExecOutput bounds what ExecSync keeps of each stream, as the CRI's
// 16 MiB message limit requires.
const maxExecOutput = 8 << 20

// limitedBuffer keeps the first n bytes written to it and drops the rest.
type limitedBuffer struct {
	bytes.Buffer
	n int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.n - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// ExecSync runs cmd in a running container, as ExecSync (kubelet's exec
// probes): in its namespaces and cgroup, as its user, with its
// capabilities and seccomp filter. A timeout (0: none) kills the command.
func (m *Manager) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (stdout, stderr []byte, code int32, err error) {
	if len(cmd) == 0 {
		return nil, nil, 0, fmt.Errorf("cmd is empty: %w", errdefs.ErrInvalidArgument)
	}
	c, err := m.GetContainer(id)
	if err != nil {
		return nil, nil, 0, err
	}
	p := m.running(c)
	if p == nil {
		return nil, nil, 0, fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	spec, err := os.Open(filepath.Join(m.bundleDir(c.ID), "config.json"))
	if err != nil {
		return nil, nil, 0, err
	}
	defer func() { _ = spec.Close() }()
	args := []string{"exec-enter", "--pid", strconv.Itoa(p.PID), "--exec-fd", "3"}
	for _, f := range m.opts.Cgroups.ProcsFiles(c.Cgroup) {
		args = append(args, "--cgroup", f)
	}
	args = append(args, "--", "husk", "exec-init", "--")
	args = append(args, cmd...)

	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var out, errOut limitedBuffer
	out.n, errOut.n = maxExecOutput, maxExecOutput
	x := exec.CommandContext(ctx, m.binaryPath(), args...)
	x.ExtraFiles = []*os.File{m.opts.Binary, spec} // fds 3 and 4
	x.Env = []string{"HUSK_EXEC_SPEC_FD=4"}
	x.Stdin = nil
	x.Stdout, x.Stderr = &out, &errOut
	x.Dir = "/"
	x.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// On a timeout exec-enter gets SIGTERM and kills all the command
	// started; SIGKILL follows if it does not end.
	x.Cancel = func() error { return x.Process.Signal(syscall.SIGTERM) }
	// What the command started may hold its output open after it ended.
	x.WaitDelay = time.Second
	err = x.Run()
	if ctx.Err() != nil {
		return out.Bytes(), errOut.Bytes(), 0, fmt.Errorf("exec in container %s: %w", c.ID, ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.Bytes(), errOut.Bytes(), int32(ee.ExitCode()), nil
	}
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		return nil, nil, 0, fmt.Errorf("exec in container %s: %w", c.ID, err)
	}
	return out.Bytes(), errOut.Bytes(), 0, nil
}

var _ io.Writer = (*limitedBuffer)(nil)
