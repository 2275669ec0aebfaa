package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// cdiSpec is a CDI spec of vendor.example/device with one device, NAME:
// a device node (the host's /dev/zero under another name), a read-only
// mount of dir and an environment variable.
func cdiSpec(name, dir string) string {
	return fmt.Sprintf(`cdiVersion: "0.6.0"
kind: vendor.example/device
devices:
- name: %[1]s
  containerEdits:
    deviceNodes:
    - path: /dev/vendor-%[1]s
      hostPath: /dev/zero
    mounts:
    - hostPath: %[2]s
      containerPath: /vendor
      options: [ro, bind]
    env:
    - VENDOR_DEVICE=%[1]s
`, name, dir)
}

// Devices named by CDI (CDI_devices, as kubelet sends them for device
// plugins and DRA, and cdi.k8s.io/ annotations) get what their spec says:
// the node, usable through the device cgroup, the mount and the
// environment. A spec written while the daemon runs is used without a
// restart; an unknown device is InvalidArgument naming it; a spec with
// hooks is refused by husk's own runtime; nothing is left of a refusal.
func TestCDIDevices(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "busybox:plain", imagetest.BusyboxImage(t, v1.Config{}))
	specDir := t.TempDir()
	shared := t.TempDir()
	if err := os.WriteFile(filepath.Join(shared, "firmware"), []byte("blob"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(specDir, "vendor.yaml"), cdiSpec("dev0", shared))
	d := newDaemon(t, insecureConfig(reg.Host)+fmt.Sprintf("[cdi]\nspec_dirs = [%q]\n", specDir))
	newPodNet(t, d).install(t, d)
	pullImage(t, d, reg.Ref("busybox:plain"))
	e := &ctrEnv{d: d, reg: reg, logs: t.TempDir()}
	ctx := context.Background()
	before := countContainerLeaks(t, d)
	podID, pod := e.pod(t, "cdi")
	script := `echo env=$VENDOR_DEVICE; cat /vendor/firmware; echo; head -c 3 /dev/vendor-$VENDOR_DEVICE | od -An -tx1; touch /vendor/x 2>/dev/null || echo mount-read-only`
	check := func(name string, cfg *runtimeapi.ContainerConfig, dev string) {
		t.Helper()
		st, out := e.runToEnd(t, podID, pod, cfg)
		want := []string{"env=" + dev, "blob", " 00 00 00", "mount-read-only"}
		if st.ExitCode != 0 || strings.Join(out, "|") != strings.Join(want, "|") {
			t.Errorf("%s: exit %d, %q, want %q (stderr %q)", name, st.ExitCode, out, want, output(t, st.LogPath, "stderr"))
		}
	}
	cfg := ctrConfig("by-field", e.image("plain"), "sh", "-c", script)
	cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: "vendor.example/device=dev0"}}
	check("CDI_devices", cfg, "dev0")
	cfg = ctrConfig("by-annotation", e.image("plain"), "sh", "-c", script)
	cfg.Annotations = map[string]string{"cdi.k8s.io/vendor-plugin_dev0": "vendor.example/device=dev0"}
	check("annotation", cfg, "dev0")

	// A device that appears while husk runs (a driver that starts late).
	writeFile(t, filepath.Join(specDir, "vendor-late.yaml"), strings.Replace(cdiSpec("dev1", shared), "vendor.example/device", "vendor.example/late", 1))
	cfg = ctrConfig("late", e.image("plain"), "sh", "-c", script)
	cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: "vendor.example/late=dev1"}}
	waitFor(t, func() bool {
		resp, err := d.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if err == nil {
			_, _ = d.runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: resp.ContainerId})
		}
		return err == nil
	})
	check("a spec written later", cfg, "dev1")

	refused := map[string]struct {
		device string
		code   codes.Code
		says   string
	}{
		"unknown": {"vendor.example/device=nosuch", codes.InvalidArgument, "vendor.example/device=nosuch"},
		"hooks":   {"vendor.example/hooked=dev", codes.FailedPrecondition, "hooks"},
	}
	writeFile(t, filepath.Join(specDir, "hooked.yaml"), `cdiVersion: "0.6.0"
kind: vendor.example/hooked
devices:
- name: dev
  containerEdits:
    hooks:
    - hookName: createContainer
      path: /bin/true
`)
	for name, r := range refused {
		cfg := ctrConfig("refused-"+name, e.image("plain"), "true")
		cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: r.device}}
		var err error
		waitFor(t, func() bool { // the hooked spec is read when it appears
			_, err = d.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
			return status.Code(err) == r.code
		})
		if !strings.Contains(err.Error(), r.says) || !strings.Contains(err.Error(), "CDI_devices") {
			t.Errorf("%s: %v, want %v naming CDI_devices and %q", name, err, r.code, r.says)
		}
	}
	stopPod(t, d, podID)
	removePod(t, d, podID)
	if after := countContainerLeaks(t, d); after != before {
		t.Errorf("left behind: %+v, before %+v", after, before)
	}
}
