package image

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// bearerRegistry makes reg demand a bearer token, the way registries with
// a token server do: the /v2/ ping and every unauthenticated request get a
// Bearer challenge pointing at /token, which trades a refresh token (an
// identity token in CRI terms) for an access token.
func bearerRegistry(t *testing.T, reg *imagetest.Registry, refreshToken, accessToken string) {
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/token" {
			_ = r.ParseForm()
			if r.Form.Get("grant_type") != "refresh_token" || r.Form.Get("refresh_token") != refreshToken {
				w.WriteHeader(http.StatusUnauthorized)
				return true
			}
			_ = json.NewEncoder(w).Encode(map[string]string{"access_token": accessToken})
			return true
		}
		if r.Header.Get("Authorization") == "Bearer "+accessToken {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+reg.Host+`/token",service="test"`)
		w.WriteHeader(http.StatusUnauthorized)
		return true
	})
}

func TestRegistryAndIdentityTokens(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "tok/app:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "x"))))
	bearerRegistry(t, reg, "refresh-123", "access-456")
	s := openStore(t, insecure(reg.Host))
	if _, err := s.Pull(t.Context(), reg.Ref("tok/app:1"), nil); !errdefs.IsUnauthorized(err) {
		t.Fatalf("anonymous pull: %v", err)
	}
	if _, err := s.Pull(t.Context(), reg.Ref("tok/app:1"), &Auth{RegistryToken: "access-456"}); err != nil {
		t.Fatalf("pull with a registry token: %v", err)
	}
	if err := s.Remove(reg.Ref("tok/app:1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(t.Context(), reg.Ref("tok/app:1"), &Auth{IdentityToken: "refresh-123"}); err != nil {
		t.Fatalf("pull with an identity token: %v", err)
	}
}

// A registry that stops sending in the middle of a layer ends the pull
// even though the caller set no deadline.
func TestStalledRegistryEndsThePull(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	layer := imagetest.RandomFilesLayer(t, 5, 1<<20, 2)
	size, _ := layer.Size()
	ld, _ := layer.Digest()
	reg.Push(t, "test/stall:1", imagetest.Image(t, v1.Config{}, layer))
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/blobs/"+ld.String()) || r.Method != http.MethodGet {
			return false
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	})
	s, err := Open(filepath.Join(t.TempDir(), "images"), Options{Registries: insecure(reg.Host), ProgressTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	before := snapshot(t, s)
	_, err = s.Pull(t.Context(), reg.Ref("test/stall:1"), nil)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "sent nothing") {
		t.Fatalf("stalled pull: %v", err)
	}
	waitForEmptyTmp(t, s)
	assertUnchanged(t, s, before)
}
