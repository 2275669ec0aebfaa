package image

import "testing"

// Image references come from every PullImage, ImageStatus and
// CreateContainer request.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"busybox", "docker.io/library/busybox:1.36", "127.0.0.1:5000/a/b@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"UPPER/case", "a:b:c", "@sha256:", "localhost:99999/x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseReference(s)
		if err == nil && n.String() == "" {
			t.Errorf("%q parsed to an empty name", s)
		}
	})
}
