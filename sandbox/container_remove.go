package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"github.com/containerd/nri/pkg/api"
	"golang.org/x/sys/unix"
)

// RemoveContainer removes a container, as RemoveContainer, stopping it
// first if it runs: its root filesystem (the mount and the upper dir),
// cgroup and state go; its log stays for kubelet. An unknown container
// succeeds.
func (m *Manager) RemoveContainer(ctx context.Context, id string) error {
	c, unlock, err := m.lockContainer(id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock()
	if err := m.stopContainer(c, 0); err != nil {
		return err
	}
	var npod *api.PodSandbox
	var nctr *api.Container
	plugins := m.plugins()
	if plugins != nil {
		// Before its bundle goes: plugins see its spec as they did.
		npod, nctr = m.nriObjects(c.ID, c.PodID)
	}
	if err := m.destroyContainer(c); err != nil {
		return fmt.Errorf("removing container %s: %w", c.ID, err)
	}
	m.forgetContainer(c)
	m.emit(EventDeleted, c.ID, c.PodID)
	if plugins != nil {
		plugins.RemoveContainer(ctx, npod, nctr)
	}
	return nil
}

// destroyContainer removes what a container has on the machine. Each step
// can be repeated.
func (m *Manager) destroyContainer(c *Container) error {
	if c.Monitor != nil && alive(c.Monitor) {
		// A monitor whose container ended lingers only to drain output.
		_ = unix.Kill(c.Monitor.PID, unix.SIGKILL)
	}
	if c.Rootfs != "" {
		if err := unix.Unmount(c.Rootfs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmounting its root filesystem: %w", err)
		}
	}
	for _, v := range c.ImageVolumes {
		if err := unix.Unmount(v.Path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmounting its image volume %s: %w", v.Path, err)
		}
	}
	if err := m.killCgroup(c.Cgroup); err != nil {
		return err
	}
	if err := m.opts.Cgroups.Delete(c.Cgroup); err != nil {
		return fmt.Errorf("removing its cgroup: %w", err)
	}
	// Another runtime may still know the container (a crash came before
	// its `run` ended and deleted it).
	m.deleteRuntimeStates(c.ID)
	// What else the bundle holds mounted: the volumes of a container in
	// a pod with its own user namespace.
	if err := unmountBundle(m.bundleDir(c.ID)); err != nil {
		return err
	}
	if err := removeTree(m.bundleDir(c.ID)); err != nil {
		return err
	}
	// No record is written once the files go (a refresh racing the removal
	// would bring the directory back).
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	m.mu.Lock()
	c.gone = true
	m.mu.Unlock()
	return os.RemoveAll(m.containerDir(c.ID))
}
