package imagetest

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// unpackLayer extracts l's tar into dir (trusted input: names are only
// cleaned, not checked for escapes). Ownership is applied when running as root.
func unpackLayer(t *testing.T, l v1.Layer, dir string) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	root := os.Geteuid() == 0
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := path.Clean("/" + hdr.Name)
		dst := filepath.Join(dir, name)
		mode := hdr.FileInfo().Mode()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			_ = os.Remove(dst)
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		case tar.TypeSymlink:
			_ = os.Remove(dst)
			if err := os.Symlink(hdr.Linkname, dst); err != nil {
				t.Fatal(err)
			}
		case tar.TypeLink:
			_ = os.Remove(dst)
			if err := os.Link(filepath.Join(dir, path.Clean("/"+hdr.Linkname)), dst); err != nil {
				t.Fatal(err)
			}
			continue
		default:
			t.Fatalf("unpack %s: unsupported type %q", hdr.Name, hdr.Typeflag)
		}
		if root {
			if err := os.Lchown(dst, hdr.Uid, hdr.Gid); err != nil {
				t.Fatal(err)
			}
		}
		if hdr.Typeflag != tar.TypeSymlink {
			if err := os.Chmod(dst, mode&(os.ModePerm|os.ModeSticky|os.ModeSetuid|os.ModeSetgid)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestBusyboxLayerContents(t *testing.T) {
	l := BusyboxLayer(t)
	if l2 := BusyboxLayer(t); l2 != l {
		t.Fatal("BusyboxLayer is not cached")
	}
	// A fresh build from the host yields the same digest.
	entries, err := busyboxEntries()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := mustDigest(t, Layer(t, entries...)), mustDigest(t, l); got != want {
		t.Fatalf("rebuilt busybox layer digest %s, want %s", got, want)
	}

	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	hdrs := readTar(t, rc)
	byName := map[string]*tar.Header{}
	index := map[string]int{}
	applets := 0
	for i, h := range hdrs {
		byName[h.Name] = h
		index[h.Name] = i
		if h.Typeflag == tar.TypeLink {
			applets++
			if h.Linkname != "bin/busybox" {
				t.Errorf("%s links to %q", h.Name, h.Linkname)
			}
		}
		if h.Typeflag == tar.TypeDir && !strings.HasSuffix(h.Name, "/") {
			t.Errorf("dir entry %q without trailing slash", h.Name)
		}
	}
	if h := byName["bin/busybox"]; h == nil || h.Typeflag != tar.TypeReg || h.Mode&0o111 == 0 {
		t.Fatalf("bin/busybox entry: %+v", h)
	}
	for _, n := range []string{"bin/sh", "usr/bin/id", "bin/ls", "bin/cat"} {
		h := byName[n]
		if h == nil || h.Typeflag != tar.TypeLink {
			t.Errorf("applet %s: %+v", n, h)
		} else if index[n] < index["bin/busybox"] {
			t.Errorf("hard link %s precedes its target", n)
		}
	}
	if h := byName["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp/: %+v", h)
	}
	for _, d := range []string{"root/", "home/", "proc/", "sys/", "dev/", "etc/", "var/", "usr/bin/", "sbin/"} {
		if h := byName[d]; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("missing dir %s", d)
		}
	}
	libs := 0
	for _, h := range hdrs {
		if strings.Contains(h.Name, ".so") {
			libs++
			t.Logf("lib %s type %q -> %q (%d bytes)", h.Name, h.Typeflag, h.Linkname, h.Size)
		}
	}
	if libs == 0 {
		t.Error("no shared libraries in the layer")
	}
	size, _ := l.Size()
	t.Logf("busybox layer: %d entries, %d applets, %d libs, %d bytes compressed, digest %s",
		len(hdrs), applets, libs, size, mustDigest(t, l))
}

func TestBusyboxChroot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	dir := t.TempDir()
	unpackLayer(t, BusyboxLayer(t), dir)
	unpackLayer(t, UsersLayer(t), dir)
	if fi, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Fatalf("tmp: %v %v", fi, err)
	}

	run := func(cred *syscall.Credential, args ...string) string {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = []string{DefaultPath}
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: dir, Credential: cred}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", args, err, out)
		}
		return string(out)
	}

	out := run(nil, "/bin/sh", "-c", "echo hi; id; ls /")
	for _, want := range []string{"hi\n", "uid=0(root) gid=0(root)", "bin", "etc", "tmp", "usr"} {
		if !strings.Contains(out, want) {
			t.Errorf("sh output lacks %q:\n%s", want, out)
		}
	}
	if got := run(nil, "/usr/bin/id", "-un"); got != "root\n" {
		t.Errorf("/usr/bin/id -un = %q", got)
	}
	// id found through PATH as its own process, as another user.
	got := run(&syscall.Credential{Uid: 1000, Gid: 1000}, "/bin/sh", "-c", "exec id; echo not reached")
	if !strings.HasPrefix(got, "uid=1000(alice) gid=1000(alice)") {
		t.Errorf("id as alice = %q", got)
	}
	if got := run(nil, "/bin/sh", "-c", "id -Gn alice; id -Gn bob"); got != "alice staff extra\nbob staff\n" {
		t.Errorf("groups = %q", got)
	}
}

func TestBusyboxImage(t *testing.T) {
	extra := Layer(t, Entry{Name: "hello", Content: []byte("hi\n")})
	img := BusyboxImage(t, v1.Config{Cmd: []string{"/bin/sh"}, User: "alice"}, extra)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	if !slices.Equal(cf.Config.Env, []string{DefaultPath}) || cf.Config.User != "alice" ||
		!slices.Equal(cf.Config.Cmd, []string{"/bin/sh"}) {
		t.Errorf("config %+v", cf.Config)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	want := []v1.Hash{mustDigest(t, BusyboxLayer(t)), mustDigest(t, UsersLayer(t)), mustDigest(t, extra)}
	if len(layers) != len(want) {
		t.Fatalf("%d layers", len(layers))
	}
	for i, l := range layers {
		if d := mustDigest(t, l); d != want[i] {
			t.Errorf("layer %d digest %s, want %s", i, d, want[i])
		}
	}
	img2 := BusyboxImage(t, v1.Config{Env: []string{"A=b"}})
	cf2, err := img2.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf2.Config.Env, []string{"A=b"}) {
		t.Errorf("explicit Env replaced: %q", cf2.Config.Env)
	}
}
