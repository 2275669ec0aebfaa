package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// eventStream reads GetContainerEvents into a channel.
type eventStream struct {
	c      chan *runtimeapi.ContainerEventResponse
	err    chan error
	cancel context.CancelFunc
}

func subscribeEvents(t *testing.T, d *daemon) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := d.runtime.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		cancel()
		t.Fatalf("GetContainerEvents: %v", err)
	}
	s := &eventStream{c: make(chan *runtimeapi.ContainerEventResponse, 100), err: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			e, err := stream.Recv()
			if err != nil {
				s.err <- err
				return
			}
			s.c <- e
		}
	}()
	t.Cleanup(cancel)
	return s
}

// next is the next event, which must be typ of id.
func (s *eventStream) next(t *testing.T, id string, typ runtimeapi.ContainerEventType) *runtimeapi.ContainerEventResponse {
	t.Helper()
	select {
	case e := <-s.c:
		if e.ContainerId != id || e.ContainerEventType != typ {
			t.Fatalf("event %v of %s, want %v of %s", e.ContainerEventType, e.ContainerId, typ, id)
		}
		if e.CreatedAt == 0 || e.CreatedAt > time.Now().UnixNano() {
			t.Errorf("event %v of %s made at %d", typ, id, e.CreatedAt)
		}
		return e
	case err := <-s.err:
		t.Fatalf("waiting for %v of %s: the stream ended: %v", typ, id, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("no %v event of %s", typ, id)
	}
	return nil
}

func eventContainer(e *runtimeapi.ContainerEventResponse, id string) *runtimeapi.ContainerStatus {
	for _, c := range e.ContainersStatuses {
		if c.Id == id {
			return c
		}
	}
	return nil
}

func checkEventPod(t *testing.T, e *runtimeapi.ContainerEventResponse, uid string, state runtimeapi.PodSandboxState) {
	t.Helper()
	p := e.PodSandboxStatus
	if p.GetMetadata().GetUid() != uid || p.GetState() != state {
		t.Fatalf("%v of %s: pod %q in %v, want %q in %v", e.ContainerEventType, e.ContainerId, p.GetMetadata().GetUid(), p.GetState(), uid, state)
	}
}

func TestContainerEventsFollowTheLifecycle(t *testing.T) {
	e := newCtrEnv(t)
	events := subscribeEvents(t, e.d)
	ready, notReady := runtimeapi.PodSandboxState_SANDBOX_READY, runtimeapi.PodSandboxState_SANDBOX_NOTREADY

	podID, pod := e.pod(t, "events")
	uid := pod.Metadata.Uid
	checkEventPod(t, events.next(t, podID, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT), uid, ready)
	checkEventPod(t, events.next(t, podID, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT), uid, ready)

	cfg, exit := exitOnSignal(t, "exits", e.image("plain"), 3)
	id := e.create(t, podID, pod, cfg)
	ev := events.next(t, id, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT)
	checkEventPod(t, ev, uid, ready)
	if c := eventContainer(ev, id); c.GetState() != runtimeapi.ContainerState_CONTAINER_CREATED {
		t.Fatalf("created event's status of the container: %v", c)
	}
	e.start(t, id)
	ev = events.next(t, id, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	if c := eventContainer(ev, id); c.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("started event's status of the container: %v", c)
	}
	resp, err := e.d.runtime.PodSandboxStatus(context.Background(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	if c := eventContainer(&runtimeapi.ContainerEventResponse{ContainersStatuses: resp.ContainersStatuses}, id); c.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING || resp.Timestamp == 0 {
		t.Fatalf("PodSandboxStatus's containers_statuses %v and timestamp %d: kubelet with EventedPLEG reads the pod's containers from there", resp.ContainersStatuses, resp.Timestamp)
	}

	// The exit is reported by itself: nothing asks the daemon anything
	// from here to the event.
	exit()
	ev = events.next(t, id, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
	if c := eventContainer(ev, id); c.GetState() != runtimeapi.ContainerState_CONTAINER_EXITED || c.ExitCode != 3 {
		t.Fatalf("stopped event's status of the container: %v", c)
	}

	if _, err := e.d.runtime.RemoveContainer(context.Background(), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	ev = events.next(t, id, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
	if c := eventContainer(ev, id); c != nil {
		t.Fatalf("the deleted container is still among the pod's: %v", c)
	}
	stopPod(t, e.d, podID)
	checkEventPod(t, events.next(t, podID, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT), uid, notReady)
	stopPod(t, e.d, podID) // stopping again changes nothing: no event
	removePod(t, e.d, podID)
	// The pod is gone: its status is as it was at the event.
	checkEventPod(t, events.next(t, podID, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT), uid, notReady)
	select {
	case ev := <-events.c:
		t.Fatalf("an event no change made: %v of %s", ev.ContainerEventType, ev.ContainerId)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestContainerExitWhileDaemonWasDownIsAnEventAfterRestart(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "events-restart")
	cfg, exit := exitOnSignal(t, "quitter", e.image("plain"), 7)
	id := e.run(t, podID, pod, cfg)
	_ = e.d.stop(syscall.SIGKILL)
	exit()
	// The monitor, which outlived the daemon, records the exit.
	exitFile := filepath.Join(e.d.root, "containers", id, "exit")
	waitFor(t, func() bool { _, err := os.Stat(exitFile); return err == nil })
	e.d.start()

	events := subscribeEvents(t, e.d)
	ev := events.next(t, id, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
	checkEventPod(t, ev, pod.Metadata.Uid, runtimeapi.PodSandboxState_SANDBOX_READY)
	if c := eventContainer(ev, id); c.GetState() != runtimeapi.ContainerState_CONTAINER_EXITED || c.ExitCode != 7 {
		t.Fatalf("stopped event's status of the container: %v", c)
	}
}

func TestContainerEventStreamsEndAtShutdown(t *testing.T) {
	e := newCtrEnv(t)
	events := subscribeEvents(t, e.d)
	// The daemon's graceful stop waits for every call: the stream must
	// end, or husk would take its whole grace to stop. (The client's
	// connection stays open: d.stop would close it.)
	if err := e.d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-events.err:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("stream ended with %v, want Unavailable", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the event stream did not end at shutdown")
	}
	select {
	case err := <-e.d.exited:
		if err != nil {
			t.Fatalf("husk on SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("husk did not stop on SIGTERM")
	}
	e.d.cmd = nil
	_ = e.d.stop(syscall.SIGTERM) // its connection
	if strings.Contains(e.d.log(), "Grace period over") {
		t.Error("husk waited its whole grace for the event stream to end")
	}
	e.d.start()
}

// exitOnSignal is a container that exits with code once the test calls
// exit: it waits for a file in a directory of the host's, so that the
// daemon has no part in its ending.
func exitOnSignal(t *testing.T, name string, image *runtimeapi.ImageSpec, code int) (*runtimeapi.ContainerConfig, func()) {
	dir := t.TempDir()
	cfg := ctrConfig(name, image, "sh", "-c", "while [ ! -e /signal/go ]; do sleep 0.02; done; exit "+strconv.Itoa(code))
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/signal", HostPath: dir}}
	return cfg, func() {
		if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
