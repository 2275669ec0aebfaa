package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// SIGHUP reloads the config file: registries, pinned images and runtime
// handlers change without a restart; a broken file is refused with its
// line and the old config stays; a key that needs a restart is named and
// left as it is.
func TestConfigReloadOnSIGHUP(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "busybox:plain", imagetest.BusyboxImage(t, v1.Config{}))
	d := newDaemon(t, "")
	ctx := context.Background()
	pid := d.cmd.Process.Pid
	reload := func(config string) {
		t.Helper()
		if err := os.WriteFile(d.config, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	pull := func() error {
		_, err := d.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: reg.Ref("busybox:plain")}})
		return err
	}
	if err := pull(); err == nil || !strings.Contains(err.Error(), "plain HTTP") {
		t.Fatalf("pull over plain HTTP before it is allowed: %v", err)
	}

	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal("runc is not installed (make deps installs it)")
	}
	sock := filepath.Join(t.TempDir(), "metrics.sock")
	reload("pinned_images = [\"" + reg.Ref("busybox:*") + "\"]\n" + insecureConfig(reg.Host) + "[runtimes.runc]\npath = \"" + runc + "\"\n[metrics]\naddress = \"unix://" + sock + "\"\n")
	waitFor(t, func() bool { return pull() == nil })
	// The metrics, served from the reload on, with what came before.
	if v, _ := seriesValue(scrapeMetrics(t, metricsClient(sock)), "husk_grpc_server_handled_total", map[string]string{"grpc_method": "PullImage", "grpc_code": "Unavailable"}); v < 1 {
		t.Errorf("the pull refused before the reload is not in the metrics served after it: %v", v)
	}
	// Profiles on, at the same address: the server makes way for a new one.
	reload("pinned_images = [\"" + reg.Ref("busybox:*") + "\"]\n" + insecureConfig(reg.Host) + "[runtimes.runc]\npath = \"" + runc + "\"\n[metrics]\naddress = \"unix://" + sock + "\"\n[debug]\npprof = true\n")
	waitFor(t, func() bool {
		resp, err := metricsClient(sock).Get("http://husk/debug/pprof/cmdline")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	st, err := d.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: reg.Ref("busybox:plain")}})
	if err != nil || !st.GetImage().GetPinned() {
		t.Errorf("an image pinned by the new config: %v, %v", st.GetImage(), err)
	}
	rs, err := d.runtime.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil || len(rs.RuntimeHandlers) != 2 || rs.RuntimeHandlers[1].Name != "runc" {
		t.Errorf("runtime handlers after the reload: %v, %v", rs.GetRuntimeHandlers(), err)
	}

	reload("pinned_images = [\n[cdi]\n")
	waitFor(t, func() bool { return strings.Contains(d.log(), "Config not reloaded") })
	if !strings.Contains(d.log(), "line 2") {
		t.Errorf("the refusal does not name the line:\n%s", d.log())
	}
	if err := pull(); err != nil {
		t.Errorf("pull after a broken config was refused: %v", err)
	}

	reload(insecureConfig(reg.Host) + "[cdi]\nenable = false\n[signature_policy.\"" + reg.Host + "\"]\nmode = \"reject\"\n")
	waitFor(t, func() bool { return strings.Count(d.log(), `"Config reloaded"`) == 3 })
	if !strings.Contains(d.log(), `key="cdi"`) {
		t.Errorf("the log does not name the key that needs a restart:\n%s", d.log())
	}
	if err := pull(); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("pull after a reload that rejects the registry's images: %v, want FailedPrecondition", err)
	}
	// That reload took the metrics' address away.
	if _, err := os.Stat(sock); err == nil {
		t.Error("the metrics socket is still there after a reload without [metrics]")
	}
	if d.cmd.Process.Pid != pid || d.cmd.ProcessState != nil {
		t.Error("the daemon did not live through the reloads")
	}
}
