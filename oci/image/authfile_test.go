package image

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// A pull that brings no credentials takes the auth file's for its
// registry (or the longest key its repository falls under); credentials
// the pull brings win over the file.
func TestAuthFileGivesCredentialsToPullsWithout(t *testing.T) {
	reg := imagetest.NewRegistry(t, imagetest.WithBasicAuth("alice", "s3cret", "private/"))
	reg.Push(t, "private/app:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "x"))))
	ref := reg.Ref("private/app:1")
	authFile := filepath.Join(t.TempDir(), "auth.json")
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	pull := func(file string, auth *Auth) error {
		s, err := Open(filepath.Join(t.TempDir(), "images"), Options{Registries: insecure(reg.Host), AuthFile: file})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Close() }()
		_, err = s.Pull(t.Context(), ref, auth)
		return err
	}
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(authFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	if err := pull(authFile, nil); err == nil {
		t.Fatal("pulled a private image with no credentials and no auth file")
	}
	for name, body := range map[string]string{
		"host":          fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, reg.Host, b64("alice:s3cret")),
		"URL":           fmt.Sprintf(`{"auths": {"https://%s/": {"username": "alice", "password": "s3cret"}}}`, reg.Host),
		"longest match": fmt.Sprintf(`{"auths": {%q: {"auth": %q}, %q: {"auth": %q}, %q: {"auth": %q}}}`, reg.Host, b64("bob:wrong"), reg.Host+"/private", b64("alice:s3cret"), reg.Host+"/privateer", b64("eve:wrong")),
	} {
		write(body)
		if err := pull(authFile, nil); err != nil {
			t.Errorf("auth file by %s: %v", name, err)
		}
	}
	if err := pull(authFile, &Auth{Username: "alice", Password: "wrong"}); err == nil {
		t.Error("the auth file's credentials were used over the pull's own")
	}
	write(fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, reg.Host+"/other", b64("alice:s3cret")))
	if err := pull(authFile, nil); err == nil {
		t.Error("credentials for another repository were used")
	}
	write("not json")
	if err := pull(authFile, nil); err == nil {
		t.Error("a broken auth file was taken for none")
	}
}

// The file's keys become scopes as the signature policy's do; Docker's
// names for Docker Hub are docker.io.
func TestAuthKeysAreScopes(t *testing.T) {
	for in, want := range map[string]string{
		"https://index.docker.io/v1/": "docker.io",
		"index.docker.io":             "docker.io",
		"registry-1.docker.io":        "docker.io",
		"docker.io/nginx":             "docker.io/library/nginx",
		"https://r.example:5000/":     "r.example:5000",
		"r.example/team":              "r.example/team",
	} {
		if got := normalizeAuthKey(in); got != want {
			t.Errorf("normalizeAuthKey(%q) = %q, want %q", in, got, want)
		}
	}
}
