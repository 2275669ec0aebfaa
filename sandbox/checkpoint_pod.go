package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/oci/runtime/checkpoint"
)

// A pod's checkpoint (CheckpointPod) is a directory: podDumpFile, and for
// each container, containers/NAME/ with what a container's archive holds
// (CheckpointContainer), unpacked.
const (
	podDumpFile   = "pod.dump"
	podContainers = "containers"
)

// podDump is a pod checkpoint's podDumpFile.
type podDump struct {
	// Config is the pod's PodSandboxConfig, as protobuf JSON.
	Config         json.RawMessage `json:"config"`
	RuntimeHandler string          `json:"runtimeHandler,omitempty"`
	// Containers are the names of the containers checkpointed, each the
	// name of its directory.
	Containers []string `json:"containers"`
}

// CheckpointPod dumps the given running containers of a pod into dir, an
// existing empty directory, as one consistent cut: every container is
// frozen before any is dumped, and all are thawed before it returns,
// whatever happened. A failure leaves dir empty.
func (m *Manager) CheckpointPod(ctx context.Context, podID, dir string, ids []string) (err error) {
	if err := m.checkCRIU(); err != nil {
		return err
	}
	pod, unlockPod, err := m.lockExisting(podID)
	if err != nil {
		return err
	}
	if pod == nil {
		return fmt.Errorf("pod sandbox %q: %w", podID, errdefs.ErrNotFound)
	}
	defer unlockPod()
	if !pod.Ready() {
		return fmt.Errorf("pod sandbox %s is not ready: %w", pod.ID, errdefs.ErrFailedPrecondition)
	}
	if err := checkEmptyDir(dir); err != nil {
		return err
	}
	cps, unlock, err := m.lockPodContainers(pod, ids)
	if err != nil {
		return err
	}
	defer unlock()
	defer func() {
		if err != nil {
			emptyDir(dir)
		}
	}()
	thaw, err := m.freezeAll(ctx, cps)
	// Thawed whatever happens: a pod is never left frozen.
	defer thaw()
	if err != nil {
		return err
	}
	names := make([]string, 0, len(cps))
	for _, cp := range cps {
		name := cp.c.Config.GetMetadata().GetName()
		cdir := filepath.Join(dir, podContainers, name)
		if err := os.MkdirAll(cdir, 0o700); err != nil {
			return err
		}
		if err := m.capture(ctx, cp, cdir, m.opts.Cgroups.FreezerDir(cp.c.Cgroup)); err != nil {
			return err
		}
		names = append(names, name)
	}
	raw, err := protojson.Marshal(pod.Config)
	if err != nil {
		return err
	}
	b, err := json.Marshal(podDump{Config: raw, RuntimeHandler: pod.RuntimeHandler, Containers: names})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, podDumpFile), b, 0o600)
}

// lockPodContainers locks the containers of a pod checkpoint, in the
// order of their IDs (as no other caller locks several), and checks each:
// the pod's, running, dumpable, its name one directory of the checkpoint.
func (m *Manager) lockPodContainers(pod *Pod, ids []string) (_ []*captured, unlock func(), err error) {
	var unlocks []func()
	unlock = func() {
		for _, u := range slices.Backward(unlocks) {
			u()
		}
	}
	defer func() {
		if err != nil {
			unlock()
		}
	}()
	sorted := slices.Sorted(slices.Values(ids))
	if len(slices.Compact(slices.Clone(sorted))) != len(sorted) {
		return nil, nil, fmt.Errorf("container_ids: %v names a container twice: %w", ids, errdefs.ErrInvalidArgument)
	}
	var cps []*captured
	names := map[string]bool{}
	for _, id := range sorted {
		c, u, err := m.lockContainer(id)
		if err != nil {
			return nil, nil, fmt.Errorf("container_ids: %w", err)
		}
		unlocks = append(unlocks, u)
		if c.PodID != pod.ID {
			return nil, nil, fmt.Errorf("container_ids: container %s is not of pod sandbox %s: %w", c.ID, pod.ID, errdefs.ErrInvalidArgument)
		}
		name := c.Config.GetMetadata().GetName()
		if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || names[name] {
			return nil, nil, fmt.Errorf("container %s: its name %q cannot name it in the checkpoint: %w", c.ID, name, errdefs.ErrFailedPrecondition)
		}
		names[name] = true
		cp, err := m.prepareCapture(c)
		if err != nil {
			return nil, nil, err
		}
		cps = append(cps, cp)
	}
	return cps, unlock, nil
}

// freezeAll freezes the containers (a runc-compatible runtime's through
// the runtime); thaw thaws those it froze, whatever the context.
func (m *Manager) freezeAll(ctx context.Context, cps []*captured) (thaw func(), err error) {
	var thaws []func() error
	thaw = func() {
		for _, t := range thaws {
			if err := t(); err != nil {
				klog.ErrorS(err, "Thawing a container after its checkpoint")
			}
		}
	}
	for _, cp := range cps {
		if b := cp.oci; b != nil {
			if err := b.Pause(ctx, cp.c.ID); err != nil {
				return thaw, fmt.Errorf("freezing container %s: %w", cp.c.ID, err)
			}
			id := cp.c.ID
			thaws = append(thaws, func() error { return b.Resume(context.WithoutCancel(ctx), id) })
			continue
		}
		if err := m.opts.Cgroups.Freeze(ctx, cp.c.Cgroup); err != nil {
			return thaw, fmt.Errorf("freezing container %s: %w", cp.c.ID, err)
		}
		cg := cp.c.Cgroup
		thaws = append(thaws, func() error { return m.opts.Cgroups.Thaw(cg) })
	}
	return thaw, nil
}

func checkEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("output_path: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(entries) > 0 {
		return fmt.Errorf("output_path: %s is not empty: %w", dir, errdefs.ErrInvalidArgument)
	}
	return nil
}

// emptyDir removes what a failed checkpoint wrote in dir, not dir.
func emptyDir(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			klog.ErrorS(err, "Removing a failed checkpoint", "path", filepath.Join(dir, e.Name()))
		}
	}
}

// RestoredContainer is one container RestorePod made.
type RestoredContainer struct{ Name, ID string }

// RestorePod makes a pod from a pod checkpoint (CheckpointPod's directory,
// which it does not change) with a new config, and its containers, created
// and restored when started (StartContainer). Each container config is
// matched to a checkpointed container by name, and must name the image it
// was made from. A failure removes what it made.
func (m *Manager) RestorePod(ctx context.Context, dir string, cfg *runtimeapi.PodSandboxConfig, handler string, ctrs []*runtimeapi.ContainerConfig) (_ string, _ []RestoredContainer, err error) {
	if err := m.checkCRIU(); err != nil {
		return "", nil, err
	}
	dump, err := readPodDump(dir)
	if err != nil {
		return "", nil, err
	}
	if err := m.matchCheckpoint(dir, dump, ctrs); err != nil {
		return "", nil, err
	}
	podID, err := m.Run(ctx, cfg, handler)
	if err != nil {
		return "", nil, err
	}
	defer func() {
		if err != nil {
			if serr := m.Stop(context.WithoutCancel(ctx), podID); serr != nil {
				klog.ErrorS(serr, "Stopping the pod of a failed restore", "pod", podID)
			}
			if rerr := m.Remove(context.WithoutCancel(ctx), podID); rerr != nil {
				klog.ErrorS(rerr, "Removing the pod of a failed restore", "pod", podID)
			}
		}
	}()
	var out []RestoredContainer
	for i, c := range ctrs {
		rc := proto.CloneOf(c)
		name := c.GetMetadata().GetName()
		rc.Image = &runtimeapi.ImageSpec{Image: filepath.Join(dir, podContainers, name), UserSpecifiedImage: c.GetImage().GetImage()}
		id, err := m.CreateContainer(ctx, podID, rc)
		if err != nil {
			return "", nil, fmt.Errorf("container_configs[%d]: %w", i, err)
		}
		out = append(out, RestoredContainer{Name: name, ID: id})
	}
	return podID, out, nil
}

func readPodDump(dir string) (*podDump, error) {
	b, err := os.ReadFile(filepath.Join(dir, podDumpFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("checkpoint_path: %s has no pod checkpoint: %w", dir, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint_path: %w", err)
	}
	var d podDump
	if err := json.Unmarshal(b, &d); err != nil || len(d.Containers) == 0 {
		return nil, fmt.Errorf("checkpoint_path: %s is not a pod checkpoint of husk's: %v: %w", dir, err, errdefs.ErrInvalidArgument)
	}
	return &d, nil
}

// matchCheckpoint checks that the container configs are those of the
// checkpoint: the same names, and for each the image it was made from and
// its command where the config gives one.
func (m *Manager) matchCheckpoint(dir string, dump *podDump, ctrs []*runtimeapi.ContainerConfig) error {
	var names []string
	for _, c := range ctrs {
		names = append(names, c.GetMetadata().GetName())
	}
	if !slices.Equal(slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(dump.Containers))) {
		return fmt.Errorf("container_configs: names %v, the checkpoint has %v: %w", names, dump.Containers, errdefs.ErrInvalidArgument)
	}
	for i, c := range ctrs {
		st, err := checkpoint.ReadState(filepath.Join(dir, podContainers, c.GetMetadata().GetName()))
		if err != nil {
			return fmt.Errorf("checkpoint_path: container %s: %v: %w", c.GetMetadata().GetName(), err, errdefs.ErrInvalidArgument)
		}
		img, err := m.opts.Images.Get(c.GetImage().GetImage())
		if err != nil {
			return fmt.Errorf("container_configs[%d].image: %w", i, err)
		}
		if img.ID != st.Image {
			return fmt.Errorf("container_configs[%d].image: %s is %s, the checkpointed container's was %s: %w", i, c.GetImage().GetImage(), img.ID, st.Image, errdefs.ErrFailedPrecondition)
		}
		var old runtimeapi.ContainerConfig
		if err := protojson.Unmarshal(st.Config, &old); err != nil {
			return fmt.Errorf("checkpoint_path: container %s: %v: %w", c.GetMetadata().GetName(), err, errdefs.ErrInvalidArgument)
		}
		if len(c.Command) > 0 && !slices.Equal(c.Command, old.Command) || len(c.Args) > 0 && !slices.Equal(c.Args, old.Args) {
			return fmt.Errorf("container_configs[%d]: command %q %q, the checkpointed process was started as %q %q: %w", i, c.Command, c.Args, old.Command, old.Args, errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}
