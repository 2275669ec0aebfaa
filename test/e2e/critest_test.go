//go:build critest

// critest, the CRI validation suite of cri-tools, against husk. It runs in
// `make test` (and alone with `make critest`), which build it with
// hack/build-critest.sh. Its images are built here and served through
// mirrors of the registries it names.

package e2e

import (
	"archive/tar"
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/husk-runtime/husk/oci/runtime/apparmor"
	"github.com/husk-runtime/husk/test/imagetest"
)

// criSkip names what critest checks that needs something no test machine
// has: two cri-tools images pulled by a pinned digest (no local build can
// have it), SELinux, Windows; and AppArmor where the host has none
// (make vm-test runs those specs in a guest that has it).
func criSkip() []string {
	skip := []string{"public image with digest", "support all kinds of references", "SELinux", "[Ww]indows"}
	if !apparmor.Enabled() {
		skip = append(skip, "[Aa]pp[Aa]rmor")
	}
	return skip
}

func TestCritest(t *testing.T) {
	runCritest(t, os.Getenv("CRITEST_RUNTIME_HANDLER"))
}

// TestCritestRuncHandler runs the suite's pods under the runc runtime
// handler: containers run by runc, pods husk's.
func TestCritestRuncHandler(t *testing.T) {
	runCritest(t, "runc")
}

// TestCritestCrunHandler: the same under crun (Debian's 1.8.1), which
// must pass what runc does.
func TestCritestCrunHandler(t *testing.T) {
	if why := crunUnusable(); why != "" {
		t.Skip(why)
	}
	runCritest(t, "crun")
}

func runCritest(t *testing.T, handler string) {
	critest := os.Getenv("CRITEST")
	if critest == "" {
		t.Fatal("CRITEST must name a critest binary (make critest builds one)")
	}
	reg := imagetest.NewRegistry(t)
	// Debian's busybox has no ipcs or pgrep, which the IPC and exec specs
	// run: small scripts over /proc stand in.
	tools := imagetest.Layer(t,
		imagetest.Entry{Name: "usr/", Type: tar.TypeDir},
		imagetest.Entry{Name: "usr/local/", Type: tar.TypeDir},
		imagetest.Entry{Name: "usr/local/bin/", Type: tar.TypeDir},
		imagetest.Entry{Name: "usr/local/bin/ipcs", Mode: 0o755, Content: []byte("#!/bin/sh\ncat /proc/sysvipc/shm\n")},
		imagetest.Entry{Name: "usr/local/bin/pgrep", Mode: 0o755, Content: []byte("#!/bin/sh\nfor d in /proc/[0-9]*; do\n\tread -r comm < \"$d/comm\" 2>/dev/null || continue\n\tcase $comm in *\"$1\"*) echo \"${d#/proc/}\" ;; esac\ndone\n")},
	)
	reg.Push(t, "e2e-test-images/busybox:1.29-2", imagetest.BusyboxImage(t, v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}, tools))
	reg.Push(t, "pause:3.9", imagetest.BusyboxImage(t, v1.Config{Cmd: []string{"sleep", "3600"}}))
	// The web servers the networking, port-forward and multi-container
	// specs talk HTTP to: busybox httpd on port 80, saying its name in
	// its log as the specs look for.
	site := imagetest.Layer(t,
		imagetest.Entry{Name: "www/", Type: tar.TypeDir},
		imagetest.Entry{Name: "www/index.html", Content: []byte("<html>husk critest</html>\n")},
	)
	reg.Push(t, "e2e-test-images/httpd:2.4.39-4", imagetest.BusyboxImage(t, v1.Config{Cmd: []string{"sh", "-c",
		"echo httpd starting; exec httpd -f -p 80 -h /www"}}, site))
	// nginx: what the PID namespace specs look for (a process named
	// nginx whose command line says "master process", its pid in
	// /var/run/nginx.pid), serving HTTP with busybox httpd.
	nginx := compileC(t, fakeNginx)
	reg.Push(t, "e2e-test-images/nginx:1.14-2", imagetest.BusyboxImage(t, v1.Config{Cmd: []string{"/usr/sbin/nginx"}}, site,
		imagetest.Layer(t, imagetest.Entry{Name: "usr/", Type: tar.TypeDir}, imagetest.Entry{Name: "usr/sbin/", Type: tar.TypeDir},
			imagetest.Entry{Name: "usr/sbin/nginx", Content: nginx, Mode: 0o755})))
	// The image volume specs mount these (by tag: the digest-pinned
	// cri-tools images cannot be made here).
	// nonewprivs: a set-user-ID root program that says its effective uid,
	// compiled here (gcc is there: cgo needs it).
	euid := compileC(t, "#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"Effective uid: %d\\n\", (int)geteuid()); return 0; }\n")
	reg.Push(t, "e2e-test-images/nonewprivs:1.3", imagetest.BusyboxImage(t, v1.Config{Entrypoint: []string{"/usr/local/bin/euid"}},
		imagetest.Layer(t, imagetest.Entry{Name: "usr/local/bin/", Type: tar.TypeDir}, imagetest.Entry{Name: "usr/local/bin/euid", Content: euid, Mode: 0o4755})))
	// The host-network port-forward spec's server, on its port 12003.
	reg.Push(t, "k8s-staging-cri-tools/hostnet-nginx-"+runtime.GOARCH+":latest", imagetest.BusyboxImage(t, v1.Config{Cmd: []string{"httpd", "-f", "-p", "12003", "-h", "/www"}}, site))
	// The image-manager specs' images (cri-tools' images/image-test and
	// images/image-user), by tag.
	reg.Push(t, "k8s-staging-cri-tools/test-image-tag:test", imagetest.BusyboxImage(t, v1.Config{Cmd: []string{"sh"}}))
	reg.Push(t, "k8s-staging-cri-tools/test-image-latest:latest", imagetest.BusyboxImage(t, v1.Config{Cmd: []string{"sh"}}))
	for i := 1; i <= 3; i++ {
		// Different images: their configs differ.
		reg.Push(t, fmt.Sprintf("k8s-staging-cri-tools/test-image-%d:latest", i), imagetest.BusyboxImage(t, v1.Config{Cmd: []string{"sh"}, Labels: map[string]string{"n": fmt.Sprint(i)}}))
		reg.Push(t, fmt.Sprintf("k8s-staging-cri-tools/test-image-tags:%d", i), imagetest.BusyboxImage(t, v1.Config{Cmd: []string{"sh"}, Labels: map[string]string{"tags": "same"}}))
	}
	for name, user := range map[string]string{"uid": "1002", "username": "www-data", "uid-group": "1003:users", "username-group": "www-data:users"} {
		reg.Push(t, "k8s-staging-cri-tools/test-image-user-"+name+":latest", imagetest.BusyboxImage(t, v1.Config{User: user, Cmd: []string{"sh"}}))
	}
	// As cri-tools' images/image-predefined-group makes it: default-user
	// (1000) in group-defined-in-image (50000), USER 1000.
	reg.Push(t, "k8s-staging-cri-tools/test-image-predefined-group:latest", imagetest.BusyboxImage(t, v1.Config{User: "1000", Cmd: []string{"sh"}},
		imagetest.Layer(t,
			imagetest.Entry{Name: "etc/", Type: tar.TypeDir},
			imagetest.Entry{Name: "etc/passwd", Content: []byte("root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n")},
			imagetest.Entry{Name: "etc/group", Content: []byte("root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")},
		)))
	config := fmt.Sprintf("[registry.\"registry.k8s.io\"]\nmirrors = [\"http://%s\"]\n[registry.\"gcr.io\"]\nmirrors = [\"http://%s\"]\n[registry.\"k8s.gcr.io\"]\nmirrors = [\"http://%s\"]\n", reg.Host, reg.Host, reg.Host)
	if handler != "" {
		path, err := exec.LookPath(handler)
		if err != nil {
			t.Fatal(err)
		}
		config += fmt.Sprintf("[runtimes.%s]\npath = %q\n", handler, path)
	}
	// NRI: critest's 13 specs run plugins of its own on husk's socket.
	// Some hold a plugin's synchronization for 2 s, the default request
	// timeout, which would drop them: 10 s here.
	nriDir, err := os.MkdirTemp("", "husk-nri-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(nriDir) })
	nriSocket := filepath.Join(nriDir, "nri.sock")
	config += fmt.Sprintf("[nri]\nenable = true\nsocket_path = %q\nplugin_path = %q\nplugin_config_path = %q\nplugin_request_timeout = \"10s\"\n",
		nriSocket, filepath.Join(nriDir, "plugins"), filepath.Join(nriDir, "conf.d"))
	d := newDaemon(t, config)
	newPodNet(t, d).install(t, d)

	args := []string{
		"--runtime-endpoint", "unix://" + d.sock, "--image-endpoint", "unix://" + d.sock,
		"--nri-socket", nriSocket,
		"--ginkgo.skip", cmp.Or(os.Getenv("CRITEST_SKIP"), strings.Join(criSkip(), "|")),
		"--ginkgo.no-color", "--ginkgo.v",
	}
	if handler != "" {
		args = append(args, "--runtime-handler", handler)
	}
	if focus := os.Getenv("CRITEST_FOCUS"); focus != "" {
		args = append(args, "--ginkgo.focus", focus)
	}
	cmd := exec.Command(critest, args...)
	out, err := cmd.CombinedOutput()
	report := filepath.Join(os.TempDir(), "critest"+handler+".log")
	_ = os.WriteFile(report, out, 0o644)
	lines := strings.Split(string(out), "\n")
	t.Logf("critest (whole output in %s), last lines:\n%s", report, strings.Join(lines[max(0, len(lines)-40):], "\n"))
	if err != nil {
		t.Errorf("critest: %v", err)
	}
}

// fakeNginx is nginx as critest sees it: it runs again as "nginx: master
// process nginx", writes its pid, serves HTTP through busybox httpd, and
// ends on SIGTERM.
const fakeNginx = `#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
static void done(int sig) { (void)sig; _exit(0); }
int main(int argc, char **argv) {
	(void)argc;
	if (strncmp(argv[0], "nginx:", 6) != 0) {
		char *args[] = {"nginx: master process nginx", NULL};
		execv("/usr/sbin/nginx", args);
		return 127;
	}
	signal(SIGTERM, done);
	mkdir("/var/run", 0755);
	FILE *f = fopen("/var/run/nginx.pid", "w");
	if (f) { fprintf(f, "%d\n", (int)getpid()); fclose(f); }
	if (fork() == 0) { execl("/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www", (char *)0); _exit(127); }
	for (;;) pause();
}
`

// compileC builds a static program from C source with the host's gcc
// (there for cgo).
func compileC(t *testing.T, source string) []byte {
	t.Helper()
	src := filepath.Join(t.TempDir(), "prog.c")
	bin := strings.TrimSuffix(src, ".c")
	if err := os.WriteFile(src, []byte(source), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-static", "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
