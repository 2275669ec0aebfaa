package cri

import (
	"errors"
	"slices"
	"testing"
)

func TestSendChunksSendsEachItemOnce(t *testing.T) {
	for _, n := range []int{0, 1, listChunk, listChunk + 1, 2*listChunk + 201} {
		items := make([]int, n)
		for i := range items {
			items[i] = i
		}
		var got []int
		msgs := 0
		err := sendChunks(items, func(chunk []int) error {
			if len(chunk) == 0 || len(chunk) > listChunk {
				t.Errorf("%d items: a chunk of %d", n, len(chunk))
			}
			msgs++
			got = append(got, chunk...)
			return nil
		})
		if err != nil || !slices.Equal(got, items) || msgs != (n+listChunk-1)/listChunk {
			t.Errorf("%d items: %d messages, %d items back, %v", n, msgs, len(got), err)
		}
	}
	boom := errors.New("client went away")
	if err := sendChunks(make([]int, 3*listChunk), func([]int) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("a failed send: %v", err)
	}
}
