package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/go-archive"
	"github.com/moby/go-archive/compression"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/encoding/protojson"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/oci/runtime/checkpoint"
	"github.com/husk-runtime/husk/oci/runtime/engine"
)

// CheckpointContainer dumps a running container into an archive at
// location (the CRI's CheckpointContainer, kubelet's checkpoint API): its
// processes (CRIU's images), its spec and CRI config, and its writable
// layer, in the layout checkpointctl reads. The container goes on
// running. A timeout of 0 is none.
func (m *Manager) CheckpointContainer(ctx context.Context, id, location string, timeout time.Duration) error {
	if err := m.checkCRIU(); err != nil {
		return err
	}
	c, unlock, err := m.lockContainer(id)
	if err != nil {
		return err
	}
	defer unlock()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cp, err := m.prepareCapture(c)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(m.containerDir(c.ID), ".checkpoint-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(work) }()
	// Frozen from before the dump until its writable layer is copied:
	// the files its processes have open are as CRIU saw them.
	thaw, err := m.freezeAll(ctx, []*captured{cp})
	if err != nil {
		thaw()
		return err
	}
	err = m.capture(ctx, cp, work, m.opts.Cgroups.FreezerDir(c.Cgroup))
	thaw()
	if err != nil {
		return err
	}
	if err := writeArchive(work, location); err != nil {
		return fmt.Errorf("checkpointing container %s: writing %s: %w", c.ID, location, err)
	}
	return nil
}

func (m *Manager) checkCRIU() error {
	if m.opts.CRIU == "" {
		return fmt.Errorf("checkpoints need CRIU (criu 4.2 or later), and husk found none: %w", errdefs.ErrFailedPrecondition)
	}
	return nil
}

// captured is a running container about to be checkpointed.
type captured struct {
	c    *Container
	init *Process
	spec *specs.Spec
	// oci is its runtime handler's runtime, which pauses and dumps it
	// itself; nil for husk's own.
	oci *engine.Binary
}

// prepareCapture refuses a container CRIU cannot dump here.
func (m *Manager) prepareCapture(c *Container) (*captured, error) {
	init := m.containerInit(c)
	if init == nil {
		return nil, fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	s, err := m.checkpointable(c)
	if err != nil {
		return nil, err
	}
	cp := &captured{c: c, init: init, spec: s}
	cp.oci, _ = m.runtimeFor(m.handlerOf(c)).(*engine.Binary)
	return cp, nil
}

// capture dumps a container into dir (which exists): CRIU's images, then
// the files beside them. The caller froze the container: frozen names its
// freezer cgroup, for CRIU to dump as it is and leave frozen.
func (m *Manager) capture(ctx context.Context, cp *captured, dir, frozen string) error {
	t0 := time.Now()
	st, err := m.dump(ctx, cp, dir, frozen)
	if err != nil {
		return fmt.Errorf("checkpointing container %s: %w", cp.c.ID, err)
	}
	klog.V(4).InfoS("Container dumped", "id", cp.c.ID, "took", time.Since(t0))
	if err := m.writeCheckpointFiles(cp.c, cp.spec, dir, st); err != nil {
		return fmt.Errorf("checkpointing container %s: %w", cp.c.ID, err)
	}
	return nil
}

// dump has CRIU dump the container's processes into work: through its
// runtime handler's own `checkpoint`, or, for husk's own runtime, naming to
// CRIU what is outside the container. It returns what a restore needs.
func (m *Manager) dump(ctx context.Context, cp *captured, work, frozen string) (*checkpoint.State, error) {
	if cp.oci != nil {
		err := cp.oci.Checkpoint(ctx, m.engineContainer(cp.c), m.opts.CRIU, work)
		return &checkpoint.State{Runtime: checkpoint.RuntimeOCI}, err
	}
	mounts, err := externalMounts(cp.spec, cp.init.PID)
	if err != nil {
		return nil, err
	}
	d := &checkpoint.Dump{CRIU: m.opts.CRIU, PID: cp.init.PID, Dir: work, Mounts: mounts, LeaveRunning: true, FreezeCgroup: frozen}
	stdio, err := d.Run(ctx)
	return &checkpoint.State{Mounts: mounts, Stdio: stdio}, err
}

// checkpointable returns the container's spec if CRIU can dump it here.
func (m *Manager) checkpointable(c *Container) (*specs.Spec, error) {
	s, err := m.readSpec(c.ID)
	if err != nil {
		return nil, err
	}
	if s.Process != nil && s.Process.Terminal {
		return nil, fmt.Errorf("container %s has a terminal, which CRIU cannot take from its monitor: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	// CRIU dumps a tree whose root is the init of its PID namespace; a
	// container in the pod's shares the pod init's.
	if p := engine.PIDNamespace(s); p == nil || p.Path != "" {
		return nil, fmt.Errorf("container %s shares a PID namespace (the pod's or the host's): only a container with its own can be checkpointed: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	return s, nil
}

// externalMounts are the container's mount points of what is outside its
// mount namespace: the spec's binds (volumes, /etc/hosts, the pod's
// /dev/shm) and, on cgroup v1, the binds of its cgroup in each hierarchy.
func externalMounts(s *specs.Spec, pid int) ([]string, error) {
	var out []string
	for _, mnt := range s.Mounts {
		if slices.Contains(mnt.Options, "bind") || slices.Contains(mnt.Options, "rbind") || mnt.Type == "bind" {
			out = append(out, filepath.Clean(mnt.Destination))
		}
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, fmt.Errorf("the mounts of process %d: %w", pid, err)
	}
	defer func() { _ = f.Close() }()
	infos, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		return nil, fmt.Errorf("the mounts of process %d: %w", pid, err)
	}
	for _, i := range infos {
		if i.FSType == "cgroup" && !slices.Contains(out, i.Mountpoint) {
			out = append(out, i.Mountpoint)
		}
	}
	return out, nil
}

// writeCheckpointFiles writes what goes beside CRIU's images.
func (m *Manager) writeCheckpointFiles(c *Container, s *specs.Spec, work string, st *checkpoint.State) error {
	raw, err := protojson.Marshal(c.Config)
	if err != nil {
		return err
	}
	st.Config, st.Image = raw, c.ImageID
	imageName := c.Config.GetImage().GetUserSpecifiedImage()
	if imageName == "" {
		imageName = c.Config.GetImage().GetImage()
	}
	// checkpointctl names a container and its pod by the annotations
	// containerd's CRI sets (husk's spec has the request's own only).
	dumped := *s
	dumped.Annotations = maps.Clone(s.Annotations)
	if dumped.Annotations == nil {
		dumped.Annotations = map[string]string{}
	}
	dumped.Annotations["io.kubernetes.cri.container-name"] = c.Config.GetMetadata().GetName()
	if p, err := m.lookup(c.PodID); err == nil {
		dumped.Annotations["io.kubernetes.cri.sandbox-name"] = p.Config.GetMetadata().GetName()
		dumped.Annotations["io.kubernetes.cri.sandbox-namespace"] = p.Config.GetMetadata().GetNamespace()
	}
	files := map[string]any{
		checkpoint.SpecDump: &dumped,
		checkpoint.ConfigDump: checkpoint.Config{
			ID: c.ID, Name: c.Config.GetMetadata().GetName(), RootfsImage: imageName, RootfsImageRef: c.ImageID,
			RootfsImageName: imageName, Runtime: "husk", CreatedTime: time.Unix(0, c.CreatedAt).UTC(),
			CheckpointedTime: time.Now().UTC(),
		},
		checkpoint.HuskDump: st,
	}
	for name, v := range files {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(work, name), b, 0o600); err != nil {
			return err
		}
	}
	if err := copyLog(c, filepath.Join(work, checkpoint.ContainerLog)); err != nil {
		return err
	}
	// checkpointctl shows the dump's statistics from the top.
	err = os.Rename(filepath.Join(work, checkpoint.ImagesDir, checkpoint.StatsDump), filepath.Join(work, checkpoint.StatsDump))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return writeRootfsDiff(m.upperDir(c.ID), filepath.Join(work, checkpoint.RootfsDiff))
}

// copyLog copies the container's CRI log, if it has one.
func copyLog(c *Container, file string) error {
	if c.LogPath == "" {
		return nil
	}
	f, err := openLog(c)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("its log: %w", err)
	}
	defer func() { _ = f.Close() }()
	return writeNew(file, f)
}

// writeNew writes what r reads to a new file, mode 0600.
func writeNew(file string, r io.Reader) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// writeRootfsDiff tars the writable layer, overlayfs's whiteouts as
// ".wh." entries (the OCI layer format), which a restore unpacks into the
// new container's.
func writeRootfsDiff(upper, file string) error {
	rc, err := archive.TarWithOptions(upper, &archive.TarOptions{Compression: compression.None, WhiteoutFormat: archive.OverlayWhiteoutFormat})
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	return writeNew(file, rc)
}

// writeArchive tars dir to file, whole or not at all: it is written beside
// it and renamed. checkpoint.HuskDump goes first, so that a restore finds
// it without reading the images before it.
func writeArchive(dir, file string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	include := []string{checkpoint.HuskDump}
	for _, e := range entries {
		if e.Name() != checkpoint.HuskDump {
			include = append(include, e.Name())
		}
	}
	rc, err := archive.TarWithOptions(dir, &archive.TarOptions{Compression: compression.None, IncludeFiles: include})
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-")
	if err != nil {
		return fmt.Errorf("location: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := io.Copy(tmp, rc); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}
