package imagetest

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// hostBusybox is the host binary BusyboxLayer copies. It must be Debian's
// dynamically linked busybox (package "busybox"), not busybox-static: a
// static busybox runs applets in-process, which exec tests cannot observe.
const hostBusybox = "/bin/busybox"

// DefaultPath is the PATH BusyboxImage sets when the config has no Env.
const DefaultPath = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"

var busyboxCache struct {
	once  sync.Once
	layer v1.Layer
	err   error
}

// BusyboxLayer returns a gzip layer holding the host's dynamically linked
// Debian busybox at /bin/busybox, every shared library it needs (the dynamic
// loader at its absolute PT_INTERP path included; symlinks are kept as
// symlinks), one hard link to bin/busybox per applet (as listed by
// `busybox --list-full`: bin/sh, usr/bin/id, ...), and the directories /tmp
// (1777), /root (0700), /home, /proc, /sys, /dev, /etc and /var.
//
// The layer is built once per test binary and shared; its digest is
// deterministic for a given host (fixed mtimes, uid/gid 0, sorted entries).
// The test fails if busybox is missing or static (apt-get install busybox).
func BusyboxLayer(t testing.TB) v1.Layer {
	t.Helper()
	busyboxCache.once.Do(func() {
		entries, err := busyboxEntries()
		if err != nil {
			busyboxCache.err = err
			return
		}
		busyboxCache.err = errors.New("an earlier build of the layer failed")
		busyboxCache.layer = Layer(t, entries...)
		busyboxCache.err = nil
	})
	if busyboxCache.err != nil {
		t.Fatalf("imagetest: busybox layer: %v", busyboxCache.err)
	}
	return busyboxCache.layer
}

// passwd and group are the contents of UsersLayer.
const (
	usersPasswd = `root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
alice:x:1000:1000:alice:/home/alice:/bin/sh
bob:x:1001:1001:bob:/home/bob:/bin/sh
`
	usersGroup = `root:x:0:
staff:x:50:alice,bob
alice:x:1000:
bob:x:1001:
extra:x:2000:alice
nogroup:x:65534:
`
)

// UsersLayer returns a layer with /etc/passwd and /etc/group:
//
//	users:  root (0:0, /root), nobody (65534:65534), alice (1000:1000,
//	        /home/alice), bob (1001:1001, /home/bob)
//	groups: root(0), staff(50: alice,bob), alice(1000), bob(1001),
//	        extra(2000: alice), nogroup(65534)
//
// plus the home directories /home/alice and /home/bob owned by their users.
func UsersLayer(t testing.TB) v1.Layer {
	t.Helper()
	return Layer(t,
		Entry{Name: "etc/", Type: tar.TypeDir},
		Entry{Name: "etc/group", Content: []byte(usersGroup)},
		Entry{Name: "etc/passwd", Content: []byte(usersPasswd)},
		Entry{Name: "home/", Type: tar.TypeDir},
		Entry{Name: "home/alice/", Type: tar.TypeDir, UID: 1000, GID: 1000},
		Entry{Name: "home/bob/", Type: tar.TypeDir, UID: 1001, GID: 1001},
	)
}

// BusyboxImage returns an OCI image for linux/<runtime.GOARCH> made of
// BusyboxLayer, UsersLayer and then extra, whose config is cfg; when cfg.Env
// is empty it is set to DefaultPath.
func BusyboxImage(t testing.TB, cfg v1.Config, extra ...v1.Layer) v1.Image {
	t.Helper()
	if len(cfg.Env) == 0 {
		cfg.Env = []string{DefaultPath}
	}
	layers := append([]v1.Layer{BusyboxLayer(t), UsersLayer(t)}, extra...)
	return Image(t, cfg, layers...)
}

// busyboxEntries collects the layer's entries from the host: directories
// first, then files and symlinks, then hard links (whose targets must
// precede them), each group sorted by name.
func busyboxEntries() ([]Entry, error) {
	binPath, err := filepath.EvalSymlinks(hostBusybox)
	if err != nil {
		return nil, fmt.Errorf("%v (install Debian's dynamic busybox: apt-get install busybox)", err)
	}
	f, err := elf.Open(binPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", binPath, err)
	}
	interp := elfInterp(f)
	_ = f.Close()
	if interp == "" {
		return nil, fmt.Errorf("%s is statically linked (busybox-static?); need Debian's dynamic busybox (apt-get install busybox)", binPath)
	}

	b := &entrySet{dirs: map[string]Entry{}, files: map[string]Entry{}}
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return nil, err
	}
	b.file(Entry{Name: "bin/busybox", Mode: 0o755, Content: bin})

	libs, err := sharedLibs(binPath)
	if err != nil {
		return nil, err
	}
	for _, l := range libs {
		if err := b.hostPath(l, 0); err != nil {
			return nil, err
		}
	}

	out, err := exec.Command(binPath, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %v", binPath, err)
	}
	var links []Entry
	seen := map[string]bool{"bin/busybox": true}
	for _, name := range strings.Fields(string(out)) {
		name = strings.TrimPrefix(path.Clean(name), "/")
		if seen[name] || name == "." || strings.HasPrefix(name, "../") {
			continue
		}
		if _, ok := b.files[name]; ok {
			continue
		}
		seen[name] = true
		b.parents(name)
		// A hard link header carries the mode of the inode it shares:
		// unpackers apply it to the target.
		links = append(links, Entry{Name: name, Type: tar.TypeLink, Linkname: "bin/busybox", Mode: 0o755})
	}

	for _, d := range []Entry{
		{Name: "tmp/", Mode: 0o1777},
		{Name: "root/", Mode: 0o700},
		{Name: "home/"}, {Name: "proc/", Mode: 0o555}, {Name: "sys/", Mode: 0o555},
		{Name: "dev/"}, {Name: "etc/"}, {Name: "var/"},
	} {
		d.Type = tar.TypeDir
		b.dirs[d.Name] = d
	}

	entries := make([]Entry, 0, len(b.dirs)+len(b.files)+len(links))
	entries = append(entries, sortedEntries(b.dirs)...)
	entries = append(entries, sortedEntries(b.files)...)
	sort.Slice(links, func(i, j int) bool { return links[i].Name < links[j].Name })
	return append(entries, links...), nil
}

type entrySet struct {
	dirs  map[string]Entry // keyed by "name/"
	files map[string]Entry // regular files and symlinks, keyed by name
}

func (b *entrySet) parents(name string) {
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := b.dirs[d+"/"]; !ok {
			b.dirs[d+"/"] = Entry{Name: d + "/", Type: tar.TypeDir}
		}
	}
}

func (b *entrySet) file(e Entry) {
	b.parents(e.Name)
	b.files[e.Name] = e
}

// hostPath adds the host file p (absolute) under the same name: a symlink is
// kept as a symlink (and its target added too) when the target resolves
// lexically to the same file the kernel resolves it to; otherwise, and for
// regular files, the resolved content is copied under p's name.
func (b *entrySet) hostPath(p string, depth int) error {
	name := strings.TrimPrefix(filepath.Clean(p), "/")
	if _, ok := b.files[name]; ok {
		return nil
	}
	if depth > 16 {
		return fmt.Errorf("%s: too many levels of symlinks", p)
	}
	lfi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if lfi.Mode()&fs.ModeSymlink != 0 {
		link, err := os.Readlink(p)
		if err != nil {
			return err
		}
		target := link
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		fi, err1 := os.Stat(p)
		tfi, err2 := os.Stat(target)
		if err1 == nil && err2 == nil && os.SameFile(fi, tfi) {
			b.file(Entry{Name: name, Type: tar.TypeSymlink, Linkname: link})
			return b.hostPath(target, depth+1)
		}
	}
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", p)
	}
	content, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	b.file(Entry{Name: name, Mode: int64(fi.Mode().Perm()), Content: content})
	return nil
}

func sortedEntries(m map[string]Entry) []Entry {
	out := make([]Entry, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func elfInterp(f *elf.File) string {
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return ""
			}
			return string(bytes.TrimRight(b, "\x00"))
		}
	}
	return ""
}

// gnuTriplets maps GOARCH to Debian's multiarch library directory name.
var gnuTriplets = map[string]string{
	"amd64":    "x86_64-linux-gnu",
	"arm64":    "aarch64-linux-gnu",
	"386":      "i386-linux-gnu",
	"arm":      "arm-linux-gnueabihf",
	"ppc64le":  "powerpc64le-linux-gnu",
	"s390x":    "s390x-linux-gnu",
	"riscv64":  "riscv64-linux-gnu",
	"mips64le": "mips64el-linux-gnuabi64",
	"loong64":  "loongarch64-linux-gnu",
}

// sharedLibs returns the absolute host paths of the dynamic loader and of
// every library bin transitively needs (DT_NEEDED), resolved like ld.so does
// in the standard directories, skipping libraries of another ELF class or
// machine.
func sharedLibs(bin string) ([]string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	class, machine := f.Class, f.Machine
	interp := elfInterp(f)
	var dirs []string
	if tr, ok := gnuTriplets[runtime.GOARCH]; ok {
		dirs = append(dirs, "/lib/"+tr, "/usr/lib/"+tr)
	}
	dirs = append(dirs, filepath.Dir(interp), "/lib64", "/usr/lib64", "/lib", "/usr/lib")

	resolve := func(soname string) (string, error) {
		if strings.Contains(soname, "/") {
			return soname, nil
		}
		for _, d := range dirs {
			p := filepath.Join(d, soname)
			lf, err := elf.Open(p)
			if err != nil {
				continue
			}
			ok := lf.Class == class && lf.Machine == machine
			_ = lf.Close()
			if ok {
				return p, nil
			}
		}
		return "", fmt.Errorf("%s: needed library %s not found in %v", bin, soname, dirs)
	}

	libs := []string{interp}
	done := map[string]bool{}
	queue := []string{bin}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if done[p] {
			continue
		}
		done[p] = true
		lf, err := elf.Open(p)
		if err != nil {
			return nil, err
		}
		needed, err := lf.ImportedLibraries()
		_ = lf.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", p, err)
		}
		for _, n := range needed {
			lp, err := resolve(n)
			if err != nil {
				return nil, err
			}
			if !done[lp] {
				libs = append(libs, lp)
				queue = append(queue, lp)
			}
		}
	}
	sort.Strings(libs)
	return libs, nil
}
