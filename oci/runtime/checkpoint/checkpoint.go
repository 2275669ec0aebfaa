// Package checkpoint dumps a running container's processes with CRIU into
// the archive layout checkpointctl reads (CRI-O's and containerd's), and
// makes the CRIU restore command of a container made from such an archive.
//
// The criu binary is run, not spoken to over its RPC socket (go-criu): a
// restore is run by the container's monitor, which stays the parent of
// the restored processes, as `runc run` is run for a runc handler.
package checkpoint

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// The names in an archive. checkpointctl needs the images directory,
// config.dump and spec.dump; CRI-O and containerd add the rest.
const (
	ImagesDir  = "checkpoint"      // CRIU's images
	ConfigDump = "config.dump"     // Config
	SpecDump   = "spec.dump"       // the container's OCI spec
	RootfsDiff = "rootfs-diff.tar" // its writable layer
	StatsDump  = "stats-dump"      // CRIU's statistics of the dump
	// ContainerLog is the container's CRI log as it was: what it said
	// up to the checkpoint, for who inspects it.
	ContainerLog = "container.log"
	// HuskDump is husk's own: State.
	HuskDump   = "husk.dump"
	DumpLog    = "dump.log"
	RestoreLog = "restore.log"
)

// Config is config.dump, checkpointctl's ContainerConfig. Written here
// rather than imported: checkpointctl's module requires a go-criu version
// the module proxy does not serve.
type Config struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	RootfsImage      string    `json:"rootfsImage,omitempty"`
	RootfsImageRef   string    `json:"rootfsImageRef,omitempty"`
	RootfsImageName  string    `json:"rootfsImageName,omitempty"`
	Runtime          string    `json:"runtime,omitempty"`
	CreatedTime      time.Time `json:"createdTime"`
	CheckpointedTime time.Time `json:"checkpointedTime"`
	RestoredTime     time.Time `json:"restoredTime,omitzero"`
	Restored         bool      `json:"restored,omitempty"`
}

// State is what a restore needs beyond the images: the container's CRI
// config, the mount points CRIU took as external, and what its standard
// descriptors were.
type State struct {
	// Config is the container's CRI ContainerConfig, as protobuf JSON.
	Config json.RawMessage `json:"config"`
	// Image is the image the container's rootfs was made of (its ID).
	Image string `json:"image"`
	// Mounts are the container's mount points of things outside it
	// (binds), which a restore mounts from the new container's sources.
	Mounts []string `json:"mounts"`
	// Runtime is RuntimeOCI when a runc-compatible runtime made the
	// dump (its own `checkpoint`), which only such a runtime restores;
	// empty for husk's own.
	Runtime string `json:"runtime,omitempty"`
	// Stdio are CRIU's names of what descriptors 0, 1 and 2 were (a pipe
	// of the monitor's, or a file opened outside the container): a
	// restore gives it the new monitor's.
	Stdio [3]string `json:"stdio"`
}

// ImageAnnotations are the manifest annotations that make an image a
// checkpoint: CRI-O's (which containerd reads too) and those
// `checkpointctl build` writes. Such an image has one layer, the archive's
// content.
var ImageAnnotations = []string{"io.kubernetes.cri-o.annotations.checkpoint.name", "org.criu.checkpoint.container.name"}

// IsImage tells whether manifest annotations make an image a checkpoint.
func IsImage(annotations map[string]string) bool {
	for _, k := range ImageAnnotations {
		if annotations[k] != "" {
			return true
		}
	}
	return false
}

// RuntimeOCI is State.Runtime of a runc-compatible runtime's dump.
const RuntimeOCI = "oci"

// Dump is one checkpoint of a running container.
type Dump struct {
	CRIU string
	// PID is the container's first process (in the host's PID
	// namespace), the root of the tree dumped. It must be the init of
	// its own PID namespace.
	PID int
	// Dir gets ImagesDir with the images and CRIU's log.
	Dir string
	// Mounts are the container's mount points whose source is outside it.
	Mounts []string
	// LeaveRunning: the container goes on after the dump.
	LeaveRunning bool
	// FreezeCgroup is the freezer cgroup the caller froze the tree in,
	// for CRIU to dump it as it is and leave it frozen; "" to have CRIU
	// stop the tree itself.
	FreezeCgroup string
}

// Run dumps the tree and returns the names of its standard descriptors.
// A dump CRIU refuses is errdefs.ErrFailedPrecondition with the errors of
// CRIU's log.
func (d *Dump) Run(ctx context.Context) (stdio [3]string, err error) {
	images := filepath.Join(d.Dir, ImagesDir)
	if err := os.MkdirAll(images, 0o700); err != nil {
		return stdio, err
	}
	args := []string{"dump", "--tree", strconv.Itoa(d.PID), "--images-dir", images,
		"--log-file", DumpLog, "-v4", "--file-locks", "--manage-cgroups=ignore"}
	if d.LeaveRunning {
		args = append(args, "--leave-running")
	}
	if d.FreezeCgroup != "" {
		args = append(args, "--freeze-cgroup", d.FreezeCgroup)
	}
	netIno, err := nsInode(d.PID, "net")
	if err != nil {
		return stdio, err
	}
	// The pod's network namespace is not the container's to save: a
	// restore joins the new pod's.
	args = append(args, "--external", fmt.Sprintf("net[%d]:%s", netIno, NetKey))
	for _, m := range d.Mounts {
		if strings.ContainsAny(m, "[]:,") {
			return stdio, fmt.Errorf("mount point %q cannot be named to CRIU: %w", m, errdefs.ErrFailedPrecondition)
		}
		args = append(args, "--external", fmt.Sprintf("mnt[%s]:%s", m, m))
	}
	for fd := range 3 {
		key, external, err := fdKey(d.PID, fd)
		if err != nil {
			return stdio, err
		}
		stdio[fd] = key
		if external {
			args = append(args, "--external", key)
		}
	}
	cmd := exec.CommandContext(ctx, d.CRIU, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return stdio, fmt.Errorf("criu dump: %w", ctx.Err())
		}
		if out = bytes.TrimSpace(out); len(out) > 0 {
			err = fmt.Errorf("%w: %s", err, out)
		}
		return stdio, fmt.Errorf("criu dump: %v%s: %w", err, LogErrors(filepath.Join(images, DumpLog)), errdefs.ErrFailedPrecondition)
	}
	return stdio, nil
}

// NetKey names the pod's network namespace to CRIU (runc's name).
const NetKey = "extRootNetNS"

func nsInode(pid int, name string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, name), &st); err != nil {
		return 0, fmt.Errorf("the %s namespace of process %d: %w", name, pid, err)
	}
	return st.Ino, nil
}

// fdKey is CRIU's name of what a process's descriptor is: "pipe:[INO]"
// for a pipe, or "file[MNT:INO]" for a file, which the dump must be told
// is external (it is on a mount outside the container, like the monitor's
// /dev/null).
func fdKey(pid, fd int) (key string, external bool, err error) {
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		return "", false, fmt.Errorf("descriptor %d of process %d: %w", fd, pid, err)
	}
	if strings.HasPrefix(link, "pipe:[") {
		return link, false, nil
	}
	if !strings.HasPrefix(link, "/") {
		// A socket or a terminal: CRIU has its own ways, or refuses.
		return link, false, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), &st); err != nil {
		return "", false, err
	}
	mnt, err := fdMountID(pid, fd)
	if err != nil {
		return "", false, err
	}
	return fmt.Sprintf("file[%x:%x]", mnt, st.Ino), true, nil
}

func fdMountID(pid, fd int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "mnt_id:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("descriptor %d of process %d: no mnt_id: %w", fd, pid, errors.Join(sc.Err(), os.ErrNotExist))
}

// LogErrors is CRIU's errors in one of its logs ("Error (file:line):
// ..."), the last few, for a caller to show; empty if there are none.
func LogErrors(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	var errs []string
	for line := range strings.Lines(string(b)) {
		// The one error CRIU logs, and gets past, where root may not
		// raise its own RLIMIT_NOFILE (no CAP_SYS_RESOURCE) says nothing.
		if i := strings.Index(line, "Error ("); i >= 0 && !strings.Contains(line, "RLIMIT_NOFILE") {
			errs = append(errs, strings.TrimSpace(line[i:]))
		}
	}
	if len(errs) > 5 {
		errs = errs[len(errs)-5:]
	}
	if len(errs) == 0 {
		return ""
	}
	return "; CRIU: " + strings.Join(errs, "; ")
}

// ReadState reads a checkpoint's HuskDump from the directory it is in.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, HuskDump))
	if err != nil {
		return nil, err
	}
	return ParseState(b)
}

// ParseState parses a HuskDump.
func ParseState(b []byte) (*State, error) {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", HuskDump, err)
	}
	if st.Image == "" || len(st.Config) == 0 {
		return nil, fmt.Errorf("%s: no image or config", HuskDump)
	}
	return &st, nil
}
