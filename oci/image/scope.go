package image

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// A scope names images by where they are: a registry host
// ("registry.example:5000"), or a repository or a path above some
// ("registry.example/team", "docker.io/library/nginx"). The auth file and
// the signature policy both pick, for an image, the longest scope that
// holds it.

// repoOf is named's "host/path", the form scopes are compared with.
func repoOf(named reference.Named) string {
	return reference.Domain(named) + "/" + reference.Path(named)
}

// inScope says whether the repository repo ("host/path") is in scope.
func inScope(repo, scope string) bool {
	return repo == scope || strings.HasPrefix(repo, scope+"/")
}

// longestScope is the longest of scopes that holds repo, and whether one
// does.
func longestScope(repo string, scopes func(yield func(string) bool)) (string, bool) {
	best, found := "", false
	for s := range scopes {
		if inScope(repo, s) && len(s) > len(best) {
			best, found = s, true
		}
	}
	return best, found
}

// normalizeScope writes a scope of the config as images are named: it
// must start with a registry host (a dot, a port or localhost), and Docker
// Hub's names are as a pull makes them ("index.docker.io/nginx" is
// "docker.io/library/nginx"; "docker.io/library" stays a path above).
func normalizeScope(scope string) (string, error) {
	host, path, hasPath := strings.Cut(scope, "/")
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		return "", fmt.Errorf("scope %q does not start with a registry host (docker.io/library/nginx, not nginx)", scope)
	}
	if host == "index.docker.io" || host == "registry-1.docker.io" {
		host = "docker.io"
	}
	if !hasPath {
		return host, nil
	}
	if host == "docker.io" && !strings.Contains(path, "/") && path != "library" {
		path = "library/" + path
	}
	named, err := reference.ParseNormalizedNamed(host + "/" + path)
	if err != nil || !reference.IsNameOnly(named) {
		return "", fmt.Errorf("scope %q is not a repository or a path above one (no tag or digest)", scope)
	}
	return host + "/" + path, nil
}
