package image

import "testing"

// Scopes of the config are written as images are named, and a scope that
// could never hold an image is refused.
func TestNormalizeScope(t *testing.T) {
	for in, want := range map[string]string{
		"registry.example":           "registry.example",
		"registry.example:5000/team": "registry.example:5000/team",
		"docker.io/nginx":            "docker.io/library/nginx",
		"index.docker.io/nginx":      "docker.io/library/nginx",
		"docker.io/library":          "docker.io/library",
		"docker.io/bitnami/redis":    "docker.io/bitnami/redis",
		"localhost/app":              "localhost/app",
	} {
		if got, err := normalizeScope(in); err != nil || got != want {
			t.Errorf("normalizeScope(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"nginx", "library/nginx", "registry.example/app:1", "registry.example/App", "https://registry.example"} {
		if got, err := normalizeScope(bad); err == nil {
			t.Errorf("normalizeScope(%q) = %q, want an error", bad, got)
		}
	}
}
