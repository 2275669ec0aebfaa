package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// The workflow of a person debugging with crictl: a pod and a container
// from JSON files, ps, logs, inspect, stop, rm.
func TestCrictlPodAndContainer(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "busybox:crictl", imagetest.BusyboxImage(t, v1.Config{}))
	d := newDaemon(t, insecureConfig(reg.Host))
	newPodNet(t, d).install(t, d)
	ref := reg.Ref("busybox:crictl")
	d.mustCrictl("pull", ref)

	dir := t.TempDir()
	podJSON := filepath.Join(dir, "pod.json")
	ctrJSON := filepath.Join(dir, "ctr.json")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(podJSON, `{"metadata":{"name":"web","namespace":"default","uid":"web-uid"},"hostname":"web","log_directory":"`+dir+`/logs","linux":{}}`)
	write(ctrJSON, `{"metadata":{"name":"hello"},"image":{"image":"`+ref+`"},"command":["sh","-c","echo hello from husk; sleep 300"],"log_path":"hello.log","linux":{}}`)

	podID := strings.TrimSpace(d.mustCrictl("runp", podJSON))
	ctrID := strings.TrimSpace(d.mustCrictl("create", podID, ctrJSON, podJSON))
	d.mustCrictl("start", ctrID)
	if out := d.mustCrictl("ps"); !strings.Contains(out, ctrID[:13]) || !strings.Contains(out, "Running") || !strings.Contains(out, "hello") {
		t.Errorf("crictl ps:\n%s", out)
	}
	waitFor(t, func() bool {
		out, _ := d.crictl("logs", ctrID)
		return strings.Contains(out, "hello from husk")
	})
	var inspect struct {
		Status struct {
			State string `json:"state"`
		} `json:"status"`
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(d.mustCrictl("inspect", ctrID)), &inspect); err != nil {
		t.Fatal(err)
	}
	if inspect.Status.State != "CONTAINER_RUNNING" || inspect.Info.Pid == 0 {
		t.Errorf("crictl inspect: %+v", inspect)
	}
	start := time.Now()
	d.mustCrictl("stop", "--timeout", "2", ctrID)
	if time.Since(start) > 10*time.Second {
		t.Errorf("crictl stop took %v", time.Since(start))
	}
	if out := d.mustCrictl("ps", "-a"); !strings.Contains(out, "Exited") {
		t.Errorf("crictl ps -a after stop:\n%s", out)
	}
	d.mustCrictl("rm", ctrID)
	d.mustCrictl("stopp", podID)
	d.mustCrictl("rmp", podID)
	if out := d.mustCrictl("pods", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("pods left: %q", out)
	}
}
