package cri

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/cri/validate"
)

// CheckpointPod dumps the given running containers of a pod, frozen
// together, into an existing empty directory; they run on afterwards.
// husk has no checkpoint options.
func (s *Server) CheckpointPod(ctx context.Context, req *runtimeapi.CheckpointPodRequest) (*runtimeapi.CheckpointPodResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id", "is required")
	}
	if err := validate.AbsolutePath("output_path", req.GetOutputPath()); err != nil {
		return nil, err
	}
	if len(req.GetContainerIds()) == 0 {
		return nil, invalid("container_ids", "must name at least one running container of the pod")
	}
	for i, id := range req.GetContainerIds() {
		if id == "" {
			return nil, invalid(fmt.Sprintf("container_ids[%d]", i), "is empty")
		}
	}
	for k := range req.GetOptions() {
		return nil, invalid("options", "%q: husk has no checkpoint options", k)
	}
	if err := s.pods.CheckpointPod(ctx, req.GetPodSandboxId(), req.GetOutputPath(), req.GetContainerIds()); err != nil {
		return nil, err
	}
	return &runtimeapi.CheckpointPodResponse{}, nil
}

// RestorePod makes a pod from a pod checkpoint with the request's config,
// and its containers, created: StartContainer restores each.
func (s *Server) RestorePod(ctx context.Context, req *runtimeapi.RestorePodRequest) (*runtimeapi.RestorePodResponse, error) {
	defer s.pods.NRIBlock()() // first: see nri.NRI.Block
	if err := validate.AbsolutePath("checkpoint_path", req.GetCheckpointPath()); err != nil {
		return nil, err
	}
	if req.GetConfig() == nil {
		return nil, invalid("config", "is required")
	}
	if err := validate.PodSandboxConfig(req.GetConfig()); err != nil {
		return nil, err
	}
	for k := range req.GetOptions() {
		return nil, invalid("options", "%q: husk has no restore options", k)
	}
	if len(req.GetContainerConfigs()) == 0 {
		return nil, invalid("container_configs", "must hold the config of every checkpointed container")
	}
	names := map[string]bool{}
	for i, c := range req.GetContainerConfigs() {
		if err := validate.ContainerConfig(c); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "container_configs[%d]: %s", i, status.Convert(err).Message())
		}
		if n := c.GetMetadata().GetName(); names[n] {
			return nil, invalid(fmt.Sprintf("container_configs[%d].metadata.name", i), "%q is there twice", n)
		}
		names[c.GetMetadata().GetName()] = true
	}
	podID, ctrs, err := s.pods.RestorePod(ctx, req.GetCheckpointPath(), req.GetConfig(), req.GetRuntimeHandler(), req.GetContainerConfigs())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.RestorePodResponse{PodSandboxId: podID}
	for _, c := range ctrs {
		resp.RestoredContainers = append(resp.RestoredContainers, &runtimeapi.RestoredContainer{Name: c.Name, ContainerId: c.ID})
	}
	return resp, nil
}
