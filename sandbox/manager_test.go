package sandbox

import (
	"testing"

	"github.com/containerd/errdefs"
)

func TestFindByID(t *testing.T) {
	objs := map[string]int{"abc123": 1, "abd456": 2, "xyz": 3}
	for id, want := range map[string]int{"abc123": 1, "abc": 1, "abd": 2, "x": 3, "xyz": 3} {
		if got, err := findByID(objs, id, "thing"); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", id, got, err, want)
		}
	}
	for id, is := range map[string]func(error) bool{
		"":        errdefs.IsInvalidArgument, // empty
		"ab":      errdefs.IsInvalidArgument, // ambiguous
		"q":       errdefs.IsNotFound,
		"abc1234": errdefs.IsNotFound, // longer than the id
	} {
		if got, err := findByID(objs, id, "thing"); !is(err) || got != 0 {
			t.Errorf("%q: %d, %v", id, got, err)
		}
	}
}
