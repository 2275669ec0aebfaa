package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/runtime/checkpoint"
	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// Restore starts a container made from a checkpoint: the monitor runs
// `criu restore`, which recreates the container's processes from their
// images in the new pod's namespaces and the new container's cgroup, and
// leaves them; the monitor, their subreaper, adopts them, as it adopts a
// container whose runtime died. Everything else is the container's
// runtime's (husk's own).
type Restore struct {
	Runtime
	CRIU string
	// Dir is the checkpoint, unpacked: checkpoint.ImagesDir and
	// checkpoint.HuskDump.
	Dir string
}

var _ Runtime = (*Restore)(nil)

// Launch: criu gets the pod's network namespace as its descriptor
// monitor.FirstExtraFD, joins the pod's IPC and UTS namespaces, mounts the
// new container's sources where the old one's were, and gives the restored
// processes the new monitor's output in place of the old one's.
func (r *Restore) Launch(c *Container, a *monitor.Args) ([]*os.File, error) {
	if b, ok := r.Runtime.(*Binary); ok {
		// The runtime restores its own checkpoints, into the
		// namespaces and mounts of the container's new config.
		if _, err := b.Launch(c, a); err != nil {
			return nil, err
		}
		work, err := workDir(c)
		if err != nil {
			return nil, err
		}
		a.Program = b.restoreProgram(c, r.CRIU, r.Dir, work)
		return nil, nil
	}
	st, err := checkpoint.ReadState(r.Dir)
	if err != nil {
		return nil, err
	}
	work, err := workDir(c)
	if err != nil {
		return nil, err
	}
	args := []string{r.CRIU, "restore", "--restore-detached", "--pidfile", filepath.Join(c.StateDir, monitor.RuntimePIDFile),
		"--images-dir", filepath.Join(r.Dir, checkpoint.ImagesDir), "--work-dir", work, "--log-file", checkpoint.RestoreLog, "-v4",
		"--root", c.Spec.Root.Path, "--manage-cgroups=ignore", "--file-locks"}
	var files []*os.File
	if p := c.Namespaces[ns.Net]; p != "" {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("the pod's network namespace: %w", err)
		}
		files = append(files, f)
		args = append(args, "--inherit-fd", fmt.Sprintf("fd[%d]:%s", monitor.FirstExtraFD, checkpoint.NetKey))
	}
	for _, t := range []ns.Type{ns.IPC, ns.UTS} {
		if p := c.Namespaces[t]; p != "" {
			args = append(args, "--join-ns", fmt.Sprintf("%s:%s", t, p))
		}
	}
	for _, m := range st.Mounts {
		src, err := MountSource(c.Spec.Mounts, c.Spec.Linux.CgroupsPath, m)
		if err != nil {
			closeAll(files)
			return nil, err
		}
		args = append(args, "--external", fmt.Sprintf("mnt[%s]:%s", m, src))
	}
	for fd, key := range st.Stdio {
		if strings.HasPrefix(key, "pipe:[") || strings.HasPrefix(key, "file[") {
			args = append(args, "--inherit-fd", fmt.Sprintf("fd[%d]:%s", fd, key))
		}
	}
	a.Program = args
	a.RuntimePIDFile = filepath.Join(c.StateDir, monitor.RuntimePIDFile)
	a.Cgroups = c.CgroupProcs
	return files, nil
}

// criuWorkDir is where, in a container's state directory, CRIU writes its
// restore log and work files: the checkpoint itself is only read.
const criuWorkDir = "criu"

func workDir(c *Container) (string, error) {
	dir := filepath.Join(c.StateDir, criuWorkDir)
	return dir, os.MkdirAll(dir, 0o700)
}

func closeAll(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// MountSource is what the new container mounts at a mount point the
// checkpointed one had from outside: the spec's source, or its cgroup in a
// v1 hierarchy.
func MountSource(mounts []specs.Mount, cgroupsPath, point string) (string, error) {
	for _, m := range mounts {
		if filepath.Clean(m.Destination) == point {
			return m.Source, nil
		}
	}
	if rel, ok := strings.CutPrefix(point, "/sys/fs/cgroup/"); ok && !strings.Contains(rel, "/") {
		src := filepath.Join("/sys/fs/cgroup", rel, cgroupsPath)
		if _, err := os.Stat(src); err == nil {
			return src, nil
		}
	}
	return "", fmt.Errorf("the checkpoint has a mount at %s, which the new container has not: %w", point, errdefs.ErrFailedPrecondition)
}

// WaitStarted waits until criu ended and the monitor adopted what it
// restored: the monitor's pid file then names the process criu's names.
// A runtime's restore is waited for as its run is.
func (r *Restore) WaitStarted(ctx context.Context, c *Container) error {
	if b, ok := r.Runtime.(*Binary); ok {
		return b.WaitStarted(ctx, c)
	}
	err := waitLaunched(ctx, c, "criu restore", func() bool {
		b, err := os.ReadFile(filepath.Join(c.StateDir, monitor.RuntimePIDFile))
		if err != nil {
			return false
		}
		pid, _, err := monitor.ReadProcessFile(filepath.Join(c.StateDir, monitor.PIDFile))
		return err == nil && strconv.Itoa(pid) == strings.TrimSpace(string(b))
	})
	if early := (*ExitedEarly)(nil); errors.As(err, &early) {
		return fmt.Errorf("%w%s", err, checkpoint.LogErrors(filepath.Join(c.StateDir, criuWorkDir, checkpoint.RestoreLog)))
	}
	return err
}

// Init is the process the monitor adopted, or the runtime's init.
func (r *Restore) Init(c *Container, child *Process) *Process {
	if b, ok := r.Runtime.(*Binary); ok {
		return b.Init(c, child)
	}
	return child
}
