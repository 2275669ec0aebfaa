package e2e

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// collect reads a server stream to its end, as kubelet does.
func collect[M any, T any](t *testing.T, stream grpc.ServerStreamingClient[M], items func(*M) []T) []T {
	t.Helper()
	var out []T
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, items(m)...)
	}
}

// The Stream* RPCs (kubelet's CRIListStreaming) give what the List RPCs
// give, filters included.
func TestStreamListsMatchLists(t *testing.T) {
	e := newCtrEnv(t)
	ctx := context.Background()
	podID, pod := e.pod(t, "streamed")
	e.run(t, podID, pod, ctrConfig("streamed", e.image("plain"), "sleep", "300"))
	otherID, _ := e.pod(t, "other")

	ids := func(items []string) []string { slices.Sort(items); return items }
	for _, filter := range []*runtimeapi.PodSandboxFilter{nil, {Id: otherID}} {
		list, err := e.d.runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: filter})
		if err != nil {
			t.Fatal(err)
		}
		stream, err := e.d.runtime.StreamPodSandboxes(ctx, &runtimeapi.StreamPodSandboxesRequest{Filter: filter})
		if err != nil {
			t.Fatal(err)
		}
		got := collect(t, stream, func(m *runtimeapi.StreamPodSandboxesResponse) []*runtimeapi.PodSandbox { return m.PodSandboxes })
		var want, have []string
		for _, p := range list.Items {
			want = append(want, p.Id)
		}
		for _, p := range got {
			have = append(have, p.Id)
		}
		if !slices.Equal(ids(want), ids(have)) || len(have) == 0 {
			t.Errorf("pods, filter %v: streamed %v, listed %v", filter, have, want)
		}
	}

	list, err := e.d.runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := e.d.runtime.StreamContainers(ctx, &runtimeapi.StreamContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, cs, func(m *runtimeapi.StreamContainersResponse) []*runtimeapi.Container { return m.Containers })
	if len(got) != 1 || len(list.Containers) != 1 || got[0].Id != list.Containers[0].Id {
		t.Errorf("containers: streamed %v, listed %v", got, list.Containers)
	}
	css, err := e.d.runtime.StreamContainerStats(ctx, &runtimeapi.StreamContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{PodSandboxId: podID}})
	if err != nil {
		t.Fatal(err)
	}
	stats := collect(t, css, func(m *runtimeapi.StreamContainerStatsResponse) []*runtimeapi.ContainerStats { return m.ContainerStats })
	if len(stats) != 1 || stats[0].Attributes.Id != got[0].Id {
		t.Errorf("container stats: %v", stats)
	}
	pss, err := e.d.runtime.StreamPodSandboxStats(ctx, &runtimeapi.StreamPodSandboxStatsRequest{Filter: &runtimeapi.PodSandboxStatsFilter{Id: podID}})
	if err != nil {
		t.Fatal(err)
	}
	podStats := collect(t, pss, func(m *runtimeapi.StreamPodSandboxStatsResponse) []*runtimeapi.PodSandboxStats {
		return m.PodSandboxStats
	})
	if len(podStats) != 1 || podStats[0].Attributes.Id != podID {
		t.Errorf("pod stats: %v", podStats)
	}
	is, err := e.d.images.StreamImages(ctx, &runtimeapi.StreamImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if imgs := collect(t, is, func(m *runtimeapi.StreamImagesResponse) []*runtimeapi.Image { return m.Images }); len(imgs) != 3 {
		t.Errorf("images: streamed %d, want the 3 pulled", len(imgs))
	}
}
