package cri

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestSendChunksSendsEachItemOnceWithinTheBudget(t *testing.T) {
	big := strings.Repeat("a", 300<<10) // an annotation of 300 KiB
	for _, tc := range []struct{ items, annotated int }{{0, 0}, {1, 0}, {5000, 0}, {40, 20}, {3, 3}} {
		var items []*runtimeapi.PodSandbox
		for i := range tc.items {
			p := &runtimeapi.PodSandbox{Id: strings.Repeat("x", 64) + string(rune('a'+i%26))}
			if i < tc.annotated {
				p.Annotations = map[string]string{"big": big}
			}
			items = append(items, p)
		}
		var got []*runtimeapi.PodSandbox
		err := sendChunks(items, func(chunk []*runtimeapi.PodSandbox) error {
			size := 0
			for _, p := range chunk {
				size += proto.Size(p)
			}
			if len(chunk) == 0 || (len(chunk) > 1 && size > chunkBytes) {
				t.Errorf("%+v: a chunk of %d items, %d bytes", tc, len(chunk), size)
			}
			got = append(got, chunk...)
			return nil
		})
		if err != nil || !slices.Equal(got, items) {
			t.Errorf("%+v: %d items back, %v", tc, len(got), err)
		}
	}
	boom := errors.New("client went away")
	items := make([]*runtimeapi.Image, 3)
	for i := range items {
		items[i] = &runtimeapi.Image{Id: "x"}
	}
	if err := sendChunks(items, func([]*runtimeapi.Image) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("a failed send: %v", err)
	}
}
