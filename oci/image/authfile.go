package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"strings"

	"github.com/distribution/reference"
)

// The auth file holds credentials for pulls that bring none (kubelet sends
// its image pull secrets; a static pod or crictl may send nothing), in the
// format of Docker's config.json and of containers-auth.json:
//
//	{"auths": {"registry.example:5000": {"auth": "base64(user:password)"}}}
//
// A key is a registry host, a URL of one ("https://index.docker.io/v1/"),
// or a host with a repository path ("registry.example/team"), of which the
// longest that the image's repository falls under wins.

type authFile struct {
	Auths map[string]authEntry `json:"auths"`
}

type authEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

// normalizeAuthKey turns a key of the file into a scope (scope.go), the
// "host[/path]" an image's repository is compared with. A key that is no
// scope is kept as it is, and holds no image.
func normalizeAuthKey(k string) string {
	k = strings.TrimPrefix(strings.TrimPrefix(k, "https://"), "http://")
	k = strings.TrimSuffix(k, "/")
	// Docker's tools file Docker Hub's credentials under its v1 URL.
	if k == "index.docker.io/v1" {
		return "docker.io"
	}
	if scope, err := normalizeScope(k); err == nil {
		return scope
	}
	return k
}

// fileAuth is the file's credentials for named's repository, nil when
// there is no file or no entry. The file is read at each pull, so that an
// updated one needs no restart; it is never logged.
func fileAuth(path string, named reference.Named) (*Auth, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	var f authFile
	if err := json.Unmarshal(b, &f); err != nil {
		// Not the error's text: it may quote the file.
		return nil, fmt.Errorf("auth file %s is not JSON in config.json's format", path)
	}
	byScope := map[string]authEntry{}
	for k, e := range f.Auths {
		byScope[normalizeAuthKey(k)] = e
	}
	scope, ok := longestScope(repoOf(named), maps.Keys(byScope))
	if !ok {
		return nil, nil
	}
	e := byScope[scope]
	return &Auth{Username: e.Username, Password: e.Password, Auth: e.Auth,
		IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken}, nil
}
