package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCrictlVersionAndInfo(t *testing.T) {
	d := newDaemon(t, "")
	out := d.mustCrictl("version")
	for _, want := range []string{"RuntimeName:  husk", "RuntimeApiVersion:  v1"} {
		if !strings.Contains(out, want) {
			t.Errorf("crictl version lacks %q:\n%s", want, out)
		}
	}
	var info struct {
		Status struct {
			Conditions []struct {
				Type   string `json:"type"`
				Status bool   `json:"status"`
				Reason string `json:"reason"`
			} `json:"conditions"`
		} `json:"status"`
		Config json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal([]byte(d.mustCrictl("info")), &info); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range info.Status.Conditions {
		got[c.Type] = c.Status
		if c.Type == "NetworkReady" && c.Reason == "" {
			t.Errorf("NetworkReady false without a reason")
		}
	}
	if !got["RuntimeReady"] || got["NetworkReady"] {
		t.Errorf("conditions %+v", info.Status.Conditions)
	}
	// What kubelet reads to allow recursive read-only mounts and the
	// Strict supplementary groups policy (this kernel has mount_setattr).
	st, err := d.runtime.Status(t.Context(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if hs := st.GetRuntimeHandlers(); len(hs) != 1 || !hs[0].GetFeatures().GetRecursiveReadOnlyMounts() || !st.GetFeatures().GetSupplementalGroupsPolicy() {
		t.Errorf("runtime handlers %v, features %v: want recursive read-only mounts and the supplemental groups policy", hs, st.GetFeatures())
	}
	if !strings.Contains(string(info.Config), d.root) {
		t.Errorf("verbose info lacks the config: %s", info.Config)
	}
}

// TestUnknownRPCsAnswerUnimplemented: husk serves every RPC of its CRI
// version; a method it does not know (an old v1alpha2 client's) is
// Unimplemented, and the daemon goes on.
func TestUnknownRPCsAnswerUnimplemented(t *testing.T) {
	d := newDaemon(t, "")
	err := d.conn.Invoke(t.Context(), "/runtime.v1alpha2.RuntimeService/Version", &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "v1alpha2") {
		t.Errorf("a v1alpha2 call: %v, want Unimplemented naming it", err)
	}
	if _, err := d.runtime.Version(t.Context(), &runtimeapi.VersionRequest{}); err != nil {
		t.Errorf("Version after it: %v", err)
	}
}

func TestSocketIsRootOnly(t *testing.T) {
	d := newDaemon(t, "")
	fi, err := os.Stat(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o660 || st.Uid != 0 || st.Gid != 0 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket %v owned by %d:%d", fi.Mode(), st.Uid, st.Gid)
	}
}

func TestLiveSocketIsNotStolenStaleOneIsReplaced(t *testing.T) {
	d := newDaemon(t, "")
	// A second daemon with its own directories but the same socket.
	other := filepath.Join(d.dir, "other")
	out, err := exec.Command(huskBin, "serve", "--config", d.config, "--root", other+"/root", "--state", other+"/state", "--listen", d.sock).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by a running daemon") {
		t.Fatalf("second daemon on a live socket: %v\n%s", err, out)
	}
	if _, err := d.runtime.Version(t.Context(), &runtimeapi.VersionRequest{}); err != nil {
		t.Fatalf("first daemon stopped answering: %v", err)
	}
	// A crash leaves the socket file behind; the next start replaces it.
	_ = d.stop(syscall.SIGKILL)
	if _, err := os.Stat(d.sock); err != nil {
		t.Fatalf("SIGKILL did not leave the socket behind: %v", err)
	}
	d.start()
}

func TestSecondDaemonOnSameStateIsRefused(t *testing.T) {
	d := newDaemon(t, "")
	out, err := exec.Command(huskBin, "serve", "--config", d.config, "--root", d.root, "--state", d.state, "--listen", d.sock+"2").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by another husk daemon") {
		t.Fatalf("second daemon on the same directories: %v\n%s", err, out)
	}
}

func TestTwoDaemonsRunSideBySide(t *testing.T) {
	reg, ref := newTestImage(t, "test/side:1")
	a := newDaemon(t, insecureConfig(reg.Host))
	b := newDaemon(t, insecureConfig(reg.Host))
	pullImage(t, a, ref)
	if st, err := b.images.ImageStatus(t.Context(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil || st.Image != nil {
		t.Errorf("the other daemon sees the image: %v, %v", st, err)
	}
	if st, err := a.images.ImageStatus(t.Context(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil || st.Image == nil {
		t.Errorf("the pulling daemon lost the image: %v, %v", st, err)
	}
}

func TestBrokenConfigIsAClearError(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ config, want string }{
		"syntax":        {"listen = \"/x\"\n\nroot = = \"/y\"\n", "line 3"},
		"unknown key":   {"[registry.\"docker.io\"]\nmirror = [\"http://x\"]\n", `registry."docker.io".mirror`},
		"wrong type":    {"[registry.\"docker.io\"]\nmirrors = \"http://x\"\n", "line 2"},
		"bad mirror":    {"[registry.\"docker.io\"]\nmirrors = [\"ftp://x\"]\n", "scheme must be http or https"},
		"missing named": {"", "no such file"},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".toml")
			if name != "missing named" {
				if err := os.WriteFile(p, []byte(tc.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			out, err := exec.Command(huskBin, "serve", "--config", p, "--root", dir+"/root", "--state", dir+"/state", "--listen", dir+"/s.sock").CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("husk serve with a broken config: %v\n%s\nwant it to say %q", err, out, tc.want)
			}
		})
	}
}

// The daemon runs pods and containers from husk-runtime of its own
// version; without one it does not start, and says why.
func TestMissingOrWrongRuntimeBinaryIsAClearError(t *testing.T) {
	dir := t.TempDir()
	lone := filepath.Join(dir, "husk")
	b, err := os.ReadFile(huskBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lone, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty.toml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(dir, "wrong-runtime")
	if err := os.WriteFile(wrong, []byte("#!/bin/sh\necho husk-runtime 0.0.1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"none next to husk or in PATH": {nil, "husk-runtime (" + filepath.Join(dir, "husk-runtime")},
		"another version":              {[]string{"--runtime-binary", wrong}, "is not husk-runtime"},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"serve", "--config", filepath.Join(dir, "empty.toml"), "--root", dir + "/root", "--state", dir + "/state", "--listen", dir + "/s.sock"}, tc.args...)
			cmd := exec.Command(lone, args...)
			cmd.Env = []string{"PATH=" + dir}
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("husk serve: %v\n%s\nwant it to say %q", err, out, tc.want)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	out, err := exec.Command(huskBin, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "husk serve") {
		t.Errorf("husk --help: %v\n%s", err, out)
	}
	out, err = exec.Command(huskBin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "husk ") {
		t.Errorf("husk version: %v\n%s", err, out)
	}
}

// SIGTERM lets a call in flight finish, then the daemon exits 0 and
// removes its socket.
func TestSIGTERMFinishesCallsInFlight(t *testing.T) {
	reg, ref := newTestImage(t, "test/slow:1")
	started := slowBlobs(reg, 700*time.Millisecond)
	d := newDaemon(t, insecureConfig(reg.Host))
	done := make(chan error, 1)
	go func() {
		_, err := d.images.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		done <- err
	}()
	waitFor(t, func() bool { return started.Load() > 0 })
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-done; err != nil {
		t.Errorf("pull in flight during SIGTERM: %v", err)
	}
	if err := <-d.exited; err != nil {
		t.Errorf("husk exited with %v after SIGTERM", err)
	}
	d.cmd = nil
	if _, err := os.Stat(d.sock); !os.IsNotExist(err) {
		t.Errorf("socket left after a clean stop: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
