package sandbox

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/go-archive"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/runtime/checkpoint"
	"github.com/husk-runtime/husk/oci/runtime/engine"
)

// A CreateContainer whose image is the path of a checkpoint archive
// (CheckpointContainer's) restores the container it holds: the container
// is made from the checkpoint's image with the request's config, its
// writable layer is the checkpoint's, and StartContainer has CRIU recreate
// its processes (engine.Restore) instead of starting its command.

// restoreDirName is where a restored container keeps its checkpoint,
// unpacked, in its directory.
const restoreDirName = "checkpoint"

// fromCheckpoint returns the config a container is made from: when cfg's
// image names a checkpoint, with where the checkpoint is; else cfg and nil.
// The request's config stands, but for the image, which is the one the
// checkpointed container was made from, and the command, environment and
// working directory, the checkpointed container's where the request has
// none (crictl's config for a restore names little more than the image).
func (m *Manager) fromCheckpoint(pod *Pod, cfg *runtimeapi.ContainerConfig) (*runtimeapi.ContainerConfig, *checkpointSource, error) {
	ref := cfg.GetImage().GetImage()
	src := &checkpointSource{path: ref}
	if !filepath.IsAbs(ref) {
		// An image made from an archive: its one layer is the archive's
		// content, copied (the image may go before the container starts).
		img, err := m.opts.Images.Get(ref)
		if err != nil || !checkpoint.IsImage(m.opts.Images.Annotations(img)) {
			return cfg, nil, nil
		}
		if len(img.Layers) != 1 {
			return nil, nil, fmt.Errorf("config.image.image: checkpoint image %s has %d layers, not one: %w", ref, len(img.Layers), errdefs.ErrInvalidArgument)
		}
		src = &checkpointSource{path: m.opts.Images.LayerPath(img.Layers[0]), copy: true}
	} else if fi, err := os.Stat(ref); err == nil && !fi.IsDir() {
		src.unpack = true
	}
	if m.opts.CRIU == "" {
		return nil, nil, fmt.Errorf("config.image.image: %s is a checkpoint to restore, and restores need CRIU, which husk found none of: %w", ref, errdefs.ErrFailedPrecondition)
	}
	st, err := readArchiveState(src.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("config.image.image: checkpoint archive %s: %w", ref, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("config.image.image: %s is not a checkpoint archive of husk's: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	if usernsOf(pod) != nil {
		return nil, nil, fmt.Errorf("config.image.image: %s is a checkpoint, and pods with user namespaces of their own restore none: %w", ref, errdefs.ErrFailedPrecondition)
	}
	if st.Runtime == checkpoint.RuntimeOCI && m.opts.Cgroups.Unified() {
		// Its `restore` maps the checkpointed container's cgroup to the
		// new one's for v1 only (runc 1.1): on v2 the processes would be
		// put back in the old container's cgroup.
		return nil, nil, fmt.Errorf("config.image.image: %s was made by a runc-compatible runtime handler, whose restore on cgroup v2 puts the processes in the checkpointed container's cgroup: %w", ref, errdefs.ErrFailedPrecondition)
	}
	if oci := pod.RuntimeHandler != ""; oci != (st.Runtime == checkpoint.RuntimeOCI) {
		return nil, nil, fmt.Errorf("config.image.image: %s was made by %s, and pod %s runs %s: %w", ref, runtimeName(st.Runtime == checkpoint.RuntimeOCI), pod.ID, runtimeName(oci), errdefs.ErrFailedPrecondition)
	}
	var old runtimeapi.ContainerConfig
	if err := protojson.Unmarshal(st.Config, &old); err != nil {
		return nil, nil, fmt.Errorf("config.image.image: %s: the checkpointed container's config: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	out := proto.CloneOf(cfg)
	out.Image = &runtimeapi.ImageSpec{Image: st.Image, UserSpecifiedImage: old.GetImage().GetUserSpecifiedImage()}
	if len(out.Command) == 0 && len(out.Args) == 0 {
		out.Command, out.Args = old.Command, old.Args
	}
	if len(out.Envs) == 0 {
		out.Envs = old.Envs
	}
	if out.WorkingDir == "" {
		out.WorkingDir = old.WorkingDir
	}
	return out, src, nil
}

// checkpointSource is what a container is restored from: an archive to
// unpack, or a directory to copy, into the container's directory; or a
// directory used where it is (a pod checkpoint's, which CRIU only reads).
type checkpointSource struct {
	path         string
	unpack, copy bool
}

func runtimeName(oci bool) string {
	if oci {
		return "a runc-compatible runtime handler"
	}
	return "husk's own runtime"
}

// readArchiveState finds checkpoint.HuskDump in an archive, or in the
// directory of a container of a pod's checkpoint.
func readArchiveState(file string) (*checkpoint.State, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return checkpoint.ReadState(file)
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("no %s in it", checkpoint.HuskDump)
		}
		if err != nil {
			return nil, err
		}
		if filepath.Clean(h.Name) != checkpoint.HuskDump {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
		if err != nil {
			return nil, err
		}
		return checkpoint.ParseState(b)
	}
}

// restoreDir is where a container made from a checkpoint finds it; ""
// for one that is not.
func (m *Manager) restoreDir(c *Container, src *checkpointSource) string {
	if src == nil {
		return ""
	}
	if src.unpack || src.copy {
		return filepath.Join(m.containerDir(c.ID), restoreDirName)
	}
	return src.path
}

// placeCheckpoint puts a restored container's checkpoint where it is used
// (restoreDir); nothing for a container not made from one.
func (m *Manager) placeCheckpoint(c *Container, src *checkpointSource, st *steps) error {
	if src == nil {
		return nil
	}
	return st.done("placing the checkpoint", m.copyCheckpoint(c, src))
}

// copyCheckpoint unpacks (go-archive refuses entries that would land
// outside the directory) or copies a checkpoint into the container's
// directory, and checks what it holds.
func (m *Manager) copyCheckpoint(c *Container, src *checkpointSource) error {
	if !src.unpack && !src.copy {
		return checkPlainTree(src.path)
	}
	dir := filepath.Join(m.containerDir(c.ID), restoreDirName)
	if src.copy {
		if err := os.CopyFS(dir, os.DirFS(src.path)); err != nil {
			return fmt.Errorf("copying checkpoint %s: %w", src.path, err)
		}
	} else if err := unpackArchive(src.path, dir); err != nil {
		return err
	}
	return checkPlainTree(dir)
}

// checkPlainTree refuses a checkpoint that is not directories and regular
// files only, with its images and writable layer: a symlink among them
// would have CRIU or the layer's unpacking read a file of the host's.
func checkPlainTree(dir string) error {
	for _, name := range []string{checkpoint.ImagesDir, checkpoint.RootfsDiff} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("checkpoint %s has no %s: %w", dir, name, errdefs.ErrInvalidArgument)
		}
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return fmt.Errorf("checkpoint %s: %s is neither a file nor a directory: %w", dir, p, errdefs.ErrInvalidArgument)
		}
		return nil
	})
}

func unpackArchive(file, dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	if err := archive.Unpack(f, dir, &archive.TarOptions{}); err != nil {
		return fmt.Errorf("unpacking checkpoint %s: %v: %w", file, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// applyRootfsDiff unpacks a restored container's writable layer into its
// upper directory, before the overlay is mounted: ".wh." entries become
// overlayfs's whiteouts.
func (m *Manager) applyRootfsDiff(c *Container) error {
	f, err := os.Open(filepath.Join(c.Restore, checkpoint.RootfsDiff))
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	if err := archive.Unpack(f, m.upperDir(c.ID), &archive.TarOptions{WhiteoutFormat: archive.OverlayWhiteoutFormat}); err != nil {
		return fmt.Errorf("the checkpoint's writable layer: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// checkRestorable refuses a restore whose checkpoint has a mount from
// outside that the new container's spec has not.
func checkRestorable(c *Container, s *specs.Spec) error {
	if c.Restore == "" {
		return nil
	}
	st, err := checkpoint.ReadState(c.Restore)
	if err != nil {
		return err
	}
	for _, p := range st.Mounts {
		if strings.HasPrefix(p, "/sys/fs/cgroup/") {
			continue // the container's cgroup, there once it starts
		}
		if _, err := engine.MountSource(s.Mounts, s.Linux.CgroupsPath, p); err != nil {
			return err
		}
	}
	return nil
}

// withRestore is the runtime that starts a container: CRIU's restore for
// one made from a checkpoint.
func (m *Manager) withRestore(c *Container, rt engine.Runtime) engine.Runtime {
	if c.Restore == "" {
		return rt
	}
	return &engine.Restore{Runtime: rt, CRIU: m.opts.CRIU, Dir: c.Restore}
}

// restoreHostname sets the pod's hostname again once CRIU restored a
// container: it restores the UTS namespace's name it dumped into the pod's.
func (m *Manager) restoreHostname(pod *Pod) error {
	path := pod.Namespaces[ns.UTS]
	if path == "" || pod.Hostname == "" {
		return nil
	}
	return ns.Do(map[ns.Type]string{ns.UTS: path}, func() error { return unix.Sethostname([]byte(pod.Hostname)) })
}
