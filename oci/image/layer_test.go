package image

import (
	"archive/tar"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

func token(t *testing.T) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Each hostile layer tries to create or change something outside the layer
// directory. The pull may fail or contain the entry inside the layer; what
// must never happen is a change on the host.
func TestHostileLayersCannotEscape(t *testing.T) {
	tok := token(t)
	hostDir := t.TempDir() // stands for any host directory
	victim := filepath.Join(hostDir, "victim")
	if err := os.WriteFile(victim, []byte("host data"), 0o644); err != nil {
		t.Fatal(err)
	}
	deep := strings.Repeat("../", 40)
	// inside names where a contained entry lands in the layer when the
	// pull succeeds: symlinks resolve as if the layer were the root.
	inside := map[string]string{
		"absolute path":                                    hostDir + "/abs-" + tok,
		"symlink to / then a file through it":              hostDir + "/sym-" + tok,
		"symlink dir then overwrite host file through it":  hostDir + "/victim",
		"symlink to a host file then overwrite through it": "passwd",
		"whiteout through a symlink":                       hostDir + "/victim",
		"opaque marker through a symlink":                  hostDir,
	}
	hostile := map[string][]imagetest.Entry{
		"dot-dot path": {{Name: deep + strings.TrimPrefix(hostDir, "/") + "/dotdot-" + tok, Content: []byte("x")}},
		"absolute path": {
			{Name: hostDir + "/abs-" + tok, Content: []byte("x")},
		},
		"symlink to / then a file through it": {
			{Name: "evil", Type: tar.TypeSymlink, Linkname: "/"},
			{Name: "evil" + hostDir + "/sym-" + tok, Content: []byte("x")},
		},
		"relative symlink out then a file through it": {
			{Name: "up", Type: tar.TypeSymlink, Linkname: deep + strings.TrimPrefix(hostDir, "/")},
			{Name: "up/rel-" + tok, Content: []byte("x")},
		},
		"symlink to a host file then overwrite through it": {
			{Name: "passwd", Type: tar.TypeSymlink, Linkname: victim},
			{Name: "passwd", Content: []byte("owned")},
		},
		"symlink dir then overwrite host file through it": {
			{Name: "d", Type: tar.TypeSymlink, Linkname: hostDir},
			{Name: "d/victim", Content: []byte("owned")},
		},
		"hardlink to a host file": {
			{Name: "hl", Type: tar.TypeLink, Linkname: victim},
		},
		"hardlink escaping with dot-dot": {
			{Name: "hl", Type: tar.TypeLink, Linkname: deep + strings.TrimPrefix(victim, "/")},
		},
		"hardlink through a symlink to the host": {
			{Name: "d", Type: tar.TypeSymlink, Linkname: hostDir},
			{Name: "hl", Type: tar.TypeLink, Linkname: "d/victim"},
		},
		"whiteout through a symlink": {
			{Name: "d", Type: tar.TypeSymlink, Linkname: hostDir},
			{Name: "d/.wh.victim", Content: nil},
		},
		"opaque marker through a symlink": {
			{Name: "d", Type: tar.TypeSymlink, Linkname: hostDir},
			{Name: "d/.wh..wh..opq", Content: nil},
		},
	}
	reg := imagetest.NewRegistry(t)
	s := openStore(t, insecure(reg.Host))
	i := 0
	for name, entries := range hostile {
		i++
		repo := fmt.Sprintf("hostile/case%d:1", i)
		t.Run(name, func(t *testing.T) {
			reg.Push(t, repo, imagetest.Image(t, v1.Config{}, imagetest.Layer(t, entries...)))
			img, err := s.Pull(t.Context(), reg.Ref(repo), nil)
			t.Logf("pull: %v", err)
			if err == nil {
				// Contained: check that whatever was made stayed inside.
				want, ok := inside[name]
				if !ok {
					t.Fatalf("pull succeeded; it should have been refused")
				}
				p := filepath.Join(s.LayerPath(img.Layers[0]), want)
				if _, err := os.Lstat(p); err != nil {
					t.Errorf("contained entry %s: %v", p, err)
				}
			}
			waitForEmptyTmp(t, s)
		})
	}
	// The host is untouched.
	entries, err := os.ReadDir(hostDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "victim" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("host directory holds %v, want only victim", names)
	}
	b, err := os.ReadFile(victim)
	if err != nil || string(b) != "host data" {
		t.Errorf("victim = %q, %v", b, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(victim, &st); err != nil || st.Nlink != 1 {
		t.Errorf("victim has %d links (%v): a layer made a hard link to it", st.Nlink, err)
	}
	if _, err := getxattr(hostDir, "trusted.overlay.opaque"); err == nil {
		t.Errorf("host directory was marked opaque")
	}
}

func getxattr(path, attr string) (string, error) {
	buf := make([]byte, 64)
	n, err := syscall.Getxattr(path, attr, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Device nodes other than whiteouts, setuid bits and ownership are kept as
// the layer says: images rely on them (/dev/null in an image, sudo).
func TestLayerKeepsOwnershipModesAndXattrs(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "test/meta:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t,
		imagetest.Entry{Name: "bin", Type: tar.TypeDir, Mode: 0o755},
		imagetest.Entry{Name: "bin/su", Mode: 0o4755, UID: 0, GID: 0, Content: []byte("su")},
		imagetest.Entry{Name: "home", Type: tar.TypeDir, Mode: 0o755},
		imagetest.Entry{Name: "home/user", Type: tar.TypeDir, Mode: 0o700, UID: 1000, GID: 1001},
		imagetest.Entry{Name: "home/user/f", Mode: 0o600, UID: 1000, GID: 1001, Content: []byte("f"), Xattrs: map[string]string{"user.note": "kept"}},
		imagetest.Entry{Name: "link", Type: tar.TypeSymlink, Linkname: "/bin/su"},
		// A hardlink's header carries the mode of the inode it shares.
		imagetest.Entry{Name: "hard", Type: tar.TypeLink, Linkname: "bin/su", Mode: 0o4755},
	)))
	s := openStore(t, insecure(reg.Host))
	img := pull(t, s, reg.Ref("test/meta:1"))
	root := s.LayerPath(img.Layers[0])
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(root, "bin/su"), &st); err != nil || st.Mode&0o7777 != 0o4755 || st.Nlink != 2 {
		t.Errorf("bin/su mode %o links %d, %v", st.Mode&0o7777, st.Nlink, err)
	}
	if err := syscall.Lstat(filepath.Join(root, "home/user/f"), &st); err != nil || st.Uid != 1000 || st.Gid != 1001 {
		t.Errorf("home/user/f owner %d:%d, %v", st.Uid, st.Gid, err)
	}
	if v, err := getxattr(filepath.Join(root, "home/user/f"), "user.note"); err != nil || v != "kept" {
		t.Errorf("xattr = %q, %v", v, err)
	}
	if l, err := os.Readlink(filepath.Join(root, "link")); err != nil || l != "/bin/su" {
		t.Errorf("link -> %q, %v", l, err)
	}
}
