package cri

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/oci/runtime/spec"
	"github.com/husk-runtime/husk/sandbox"
)

// ContainerStatus reports a container; verbose adds its pid and OCI spec.
func (s *Server) ContainerStatus(_ context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container_id", "is required")
	}
	c, err := s.pods.GetContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	st := &runtimeapi.ContainerStatus{
		Id:          c.ID,
		Metadata:    c.Config.GetMetadata(),
		State:       containerState(c),
		CreatedAt:   c.CreatedAt,
		StartedAt:   c.StartedAt,
		Image:       &runtimeapi.ImageSpec{Image: c.Config.GetImage().GetImage(), UserSpecifiedImage: c.Config.GetImage().GetUserSpecifiedImage()},
		ImageRef:    c.ImageID,
		ImageId:     c.ImageID,
		Labels:      c.Config.GetLabels(),
		Annotations: c.Config.GetAnnotations(),
		Mounts:      statusMounts(c),
		LogPath:     c.LogPath,
	}
	if r := c.Config.GetLinux().GetResources(); r != nil {
		st.Resources = &runtimeapi.ContainerResources{Linux: r}
	}
	if u := c.User; u != nil {
		groups := make([]int64, len(u.Groups))
		for i, g := range u.Groups {
			groups[i] = int64(g)
		}
		st.User = &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{Uid: int64(u.UID), Gid: int64(u.GID), SupplementalGroups: groups}}
	}
	if c.StopSig != 0 {
		st.StopSignal = spec.CRISignal(syscall.Signal(c.StopSig))
	}
	if c.Exit != nil {
		st.FinishedAt = c.Exit.FinishedAt
		st.ExitCode = c.Exit.Code
		st.Reason = c.Exit.Reason
		st.Message = c.Exit.Message
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: st}
	if req.GetVerbose() {
		info := map[string]any{"sandboxID": c.PodID, "state": c.State}
		if pid, err := s.pods.ContainerPID(c.ID); err == nil {
			info["pid"] = pid
		}
		if b, err := os.ReadFile(filepath.Join(s.pods.BundleDir(c.ID), "config.json")); err == nil {
			info["runtimeSpec"] = json.RawMessage(b)
		}
		b, err := json.Marshal(info)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}

func containerState(c *sandbox.Container) runtimeapi.ContainerState {
	switch c.State {
	case sandbox.ContainerCreated:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case sandbox.ContainerStarted:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case sandbox.ContainerExited:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

// statusMounts are the config's mounts, each image volume's with the ID
// of the image mounted (image_ref, as PullImage answered it).
func statusMounts(c *sandbox.Container) []*runtimeapi.Mount {
	mounts := c.Config.GetMounts()
	if len(c.ImageVolumes) == 0 {
		return mounts
	}
	out := slices.Clone(mounts)
	for _, v := range c.ImageVolumes {
		if v.Mount < 0 || v.Mount >= len(out) {
			continue
		}
		m := proto.Clone(out[v.Mount]).(*runtimeapi.Mount)
		if m.Image == nil {
			m.Image = &runtimeapi.ImageSpec{}
		}
		m.Image.ImageRef = v.ImageID
		out[v.Mount] = m
	}
	return out
}
