package cri

import (
	"testing"

	"github.com/husk-runtime/husk/oci/image"
)

func TestImageUserBecomesUIDOrName(t *testing.T) {
	for user, want := range map[string]struct {
		uid  int64
		name string
	}{
		"":            {-1, ""},
		"1000":        {1000, ""},
		"1000:1000":   {1000, ""},
		"0":           {0, ""},
		"nobody":      {-1, "nobody"},
		"www:www":     {-1, "www"},
		"builder:100": {-1, "builder"},
	} {
		got := toCRIImage(image.Image{ID: "sha256:x", User: user}, false)
		uid := int64(-1)
		if got.Uid != nil {
			uid = got.Uid.Value
		}
		if uid != want.uid || got.Username != want.name {
			t.Errorf("USER %q: uid %d name %q, want %d %q", user, uid, got.Username, want.uid, want.name)
		}
	}
}
