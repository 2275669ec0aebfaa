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
	resp := &runtimeapi.ContainerStatusResponse{Status: s.containerStatus(c)}
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

// containerStatus is a container as the CRI reports it: in
// ContainerStatus, in its pod's PodSandboxStatus and in its events.
func (s *Server) containerStatus(c *sandbox.Container) *runtimeapi.ContainerStatus {
	st := &runtimeapi.ContainerStatus{
		Id:          c.ID,
		Metadata:    c.Config.GetMetadata(),
		State:       containerState(c),
		CreatedAt:   c.CreatedAt,
		StartedAt:   c.StartedAt,
		ImageId:     c.ImageID,
		Labels:      c.Config.GetLabels(),
		Annotations: c.Config.GetAnnotations(),
		Mounts:      statusMounts(c),
		LogPath:     c.LogPath,
	}
	if st.State == runtimeapi.ContainerState_CONTAINER_CREATED {
		st.StartedAt = 0 // not started until StartContainer has returned
	}
	st.Image, st.ImageRef = s.statusImage(c)
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
	return st
}

// containerStatuses are a pod's containers' statuses, which kubelet with
// the EventedPLEG feature reads from PodSandboxStatus and from events
// instead of asking for each container.
func (s *Server) containerStatuses(podID string) []*runtimeapi.ContainerStatus {
	cs := s.pods.ContainersOf(podID)
	out := make([]*runtimeapi.ContainerStatus, len(cs))
	for i, c := range cs {
		out[i] = s.containerStatus(c)
	}
	return out
}

// statusImage is a container's image as kubelet shows it in a pod's status
// and compares with the pod's spec: the name the user asked for (kubelet
// creates containers with the image's id and puts the name in
// user_specified_image), else a tag of the image; and a digested reference
// (name@sha256:<manifest>) as image_ref. An image removed since falls back
// to what the container was created with.
func (s *Server) statusImage(c *sandbox.Container) (*runtimeapi.ImageSpec, string) {
	spec := proto.Clone(c.Config.GetImage()).(*runtimeapi.ImageSpec)
	if spec == nil {
		spec = &runtimeapi.ImageSpec{}
	}
	ref := c.ImageID
	if img, err := s.images.Get(c.ImageID); err == nil {
		if len(img.RepoTags) > 0 {
			spec.Image = img.RepoTags[0]
		}
		if len(img.RepoDigests) > 0 {
			ref = img.RepoDigests[0]
		}
	}
	if u := spec.GetUserSpecifiedImage(); u != "" {
		spec.Image = u
	}
	return spec, ref
}

func containerState(c *sandbox.Container) runtimeapi.ContainerState {
	switch c.State {
	case sandbox.ContainerCreated, sandbox.ContainerStarting:
		// Starting: StartContainer is under way and has not returned.
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case sandbox.ContainerStarted:
		if c.StartPending {
			return runtimeapi.ContainerState_CONTAINER_CREATED
		}
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
