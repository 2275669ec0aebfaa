//go:build critest

// critest, the CRI validation suite of cri-tools, against husk:
// `make critest` builds it (hack/build-critest.sh) and runs this. Its
// images are built here and served through a mirror of registry.k8s.io;
// the suites that need images this machine cannot make are skipped (see
// criSkip).

package e2e

import (
	"archive/tar"
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// criSkip names what critest checks that needs something this machine
// has not: the cri-tools test images pinned by digest (no local build can
// stand in), nginx itself (two PID namespace specs look for its master
// process), the hostnet nginx image, AppArmor, SELinux, Windows.
var criSkip = []string{
	"Image Manager", "Image Consistency", "Image Identifier Consistency",
	"should support HostPID", "should support ContainerPID", "portforward in host network",
	"[Aa]pp[Aa]rmor", "SELinux", "[Ww]indows",
}

func TestCritest(t *testing.T) {
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
	for _, name := range []string{"e2e-test-images/nginx:1.14-2", "e2e-test-images/httpd:2.4.39-4"} {
		server := strings.Split(strings.TrimPrefix(name, "e2e-test-images/"), ":")[0]
		reg.Push(t, name, imagetest.BusyboxImage(t, v1.Config{Cmd: []string{"sh", "-c",
			"echo " + server + " starting; mkdir -p /var/run; echo $$ > /var/run/" + server + ".pid; exec httpd -f -p 80 -h /www"}}, site))
	}
	// The image volume specs mount these (by tag: the digest-pinned
	// cri-tools images cannot be made here).
	// nonewprivs: a set-user-ID root program that says its effective uid,
	// compiled here (gcc is there: cgo needs it).
	src := filepath.Join(t.TempDir(), "euid.c")
	bin := strings.TrimSuffix(src, ".c")
	_ = os.WriteFile(src, []byte("#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"Effective uid: %d\\n\", (int)geteuid()); return 0; }\n"), 0o644)
	if out, err := exec.Command("gcc", "-static", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	euid, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	reg.Push(t, "e2e-test-images/nonewprivs:1.3", imagetest.BusyboxImage(t, v1.Config{Entrypoint: []string{"/usr/local/bin/euid"}},
		imagetest.Layer(t, imagetest.Entry{Name: "usr/local/bin/", Type: tar.TypeDir}, imagetest.Entry{Name: "usr/local/bin/euid", Content: euid, Mode: 0o4755})))
	reg.Push(t, "k8s-staging-cri-tools/test-image-tag:test", imagetest.BusyboxImage(t, v1.Config{Cmd: []string{"sh"}}))
	// As cri-tools' images/image-predefined-group makes it: default-user
	// (1000) in group-defined-in-image (50000), USER 1000.
	reg.Push(t, "k8s-staging-cri-tools/test-image-predefined-group:latest", imagetest.BusyboxImage(t, v1.Config{User: "1000", Cmd: []string{"sh"}},
		imagetest.Layer(t,
			imagetest.Entry{Name: "etc/", Type: tar.TypeDir},
			imagetest.Entry{Name: "etc/passwd", Content: []byte("root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n")},
			imagetest.Entry{Name: "etc/group", Content: []byte("root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")},
		)))
	d := newDaemon(t, fmt.Sprintf("[registry.\"registry.k8s.io\"]\nmirrors = [\"http://%s\"]\n[registry.\"gcr.io\"]\nmirrors = [\"http://%s\"]\n", reg.Host, reg.Host))
	newPodNet(t, d).install(t, d)

	args := []string{
		"--runtime-endpoint", "unix://" + d.sock, "--image-endpoint", "unix://" + d.sock,
		"--ginkgo.skip", cmp.Or(os.Getenv("CRITEST_SKIP"), strings.Join(criSkip, "|")),
		"--ginkgo.no-color", "--ginkgo.v",
	}
	if focus := os.Getenv("CRITEST_FOCUS"); focus != "" {
		args = append(args, "--ginkgo.focus", focus)
	}
	cmd := exec.Command(critest, args...)
	out, err := cmd.CombinedOutput()
	report := filepath.Join(os.TempDir(), "critest.log")
	_ = os.WriteFile(report, out, 0o644)
	lines := strings.Split(string(out), "\n")
	t.Logf("critest (whole output in %s), last lines:\n%s", report, strings.Join(lines[max(0, len(lines)-40):], "\n"))
	if err != nil {
		t.Errorf("critest: %v", err)
	}
}
