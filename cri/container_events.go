package cri

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/sandbox"
)

// GetContainerEvents streams each container's and each pod's changes of
// state as they happen (kubelet's EventedPLEG relists a pod as soon as one
// of its containers stops), with the pod's status and its containers'
// statuses as they are when the event is sent. A pod's own events carry
// its id as container_id, as containerd's do. A client that cannot keep
// up is dropped with ResourceExhausted rather than slowing any container
// operation; it may subscribe again.
func (s *Server) GetContainerEvents(_ *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	sub := s.pods.SubscribeEvents()
	defer sub.Close()
	ctx := stream.Context()
	for {
		select {
		case e := <-sub.Events():
			if err := stream.Send(s.containerEvent(e)); err != nil {
				return err
			}
		case <-sub.Done():
			if sub.Dropped() {
				return status.Error(codes.ResourceExhausted, "the client fell behind the container events; subscribe again")
			}
			return status.Error(codes.Unavailable, "husk is shutting down")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

var eventTypes = map[sandbox.EventType]runtimeapi.ContainerEventType{
	sandbox.EventCreated: runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT,
	sandbox.EventStarted: runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
	sandbox.EventStopped: runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT,
	sandbox.EventDeleted: runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT,
}

func (s *Server) containerEvent(e sandbox.Event) *runtimeapi.ContainerEventResponse {
	resp := &runtimeapi.ContainerEventResponse{
		ContainerId:        e.ID,
		ContainerEventType: eventTypes[e.Type],
		CreatedAt:          e.At,
	}
	p, err := s.pods.Get(e.PodID)
	if err != nil {
		// Removed since: as it was at the event.
		p = e.Pod
	}
	if p != nil {
		resp.PodSandboxStatus = podStatus(p)
		resp.ContainersStatuses = s.containerStatuses(p.ID)
	}
	return resp
}
