package e2e

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/oci/runtime/apparmor"
)

// Where the kernel enforces AppArmor a container runs under husk's default
// profile (and so does what is exec'd in it), under none when it asks for
// unconfined, and cannot be created under a profile the node has not
// loaded. Where it does not, nothing is applied and a named profile is
// refused.
func TestAppArmorProfiles(t *testing.T) {
	e := newCtrEnv(t)
	podID, pod := e.pod(t, "apparmor")
	if !apparmor.Enabled() {
		cfg := ctrConfig("named", e.image("plain"), "true")
		cfg.Linux.SecurityContext.Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "some-profile"}
		_, err := e.d.runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "AppArmor is not enabled") {
			t.Errorf("a named profile on a host without AppArmor: %v, want FailedPrecondition", err)
		}
		// The runtime default is no profile here: the container runs.
		cfg = ctrConfig("default", e.image("plain"), "true")
		cfg.Linux.SecurityContext.Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		if st, _ := e.runToEnd(t, podID, pod, cfg); st.ExitCode != 0 {
			t.Errorf("runtime/default without AppArmor: exit %d (%s)", st.ExitCode, st.Message)
		}
		return
	}
	for name, tc := range map[string]struct {
		profile *runtimeapi.SecurityProfile
		want    string
	}{
		"unset":           {nil, apparmor.DefaultProfile + " (enforce)"},
		"runtime default": {&runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}, apparmor.DefaultProfile + " (enforce)"},
		"unconfined":      {&runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}, "unconfined"},
	} {
		cfg := ctrConfig(strings.ReplaceAll(name, " ", "-"), e.image("plain"), "sleep", "300")
		cfg.Linux.SecurityContext.Apparmor = tc.profile
		id := e.run(t, podID, pod, cfg)
		for _, cmd := range [][]string{{"cat", "/proc/1/attr/current"}, {"cat", "/proc/self/attr/current"}} {
			resp, err := e.exec(t, id, 30, cmd...)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(resp.Stdout)); got != tc.want {
				t.Errorf("%s: %v says %q, want %q", name, cmd, got, tc.want)
			}
		}
	}
	cfg := ctrConfig("unloaded", e.image("plain"), "true")
	cfg.Linux.SecurityContext.Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "husk-e2e-not-loaded"}
	_, err := e.d.runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "husk-e2e-not-loaded") {
		t.Errorf("an unloaded profile: %v, want FailedPrecondition naming it", err)
	}
}

// An SELinux label is refused, for a pod and for a container, with the
// reason (husk applies none; this host and the guest have no SELinux),
// and leaves nothing; an empty option is no request. Status says what
// each security module does here.
func TestSELinuxLabelsAreRefused(t *testing.T) {
	e := newCtrEnv(t)
	before := countLeaks(t, e.d)
	label := &runtimeapi.SELinuxOption{Type: "container_t", Level: "s0:c1,c2"}
	cfg := podConfig("selinux-pod")
	cfg.Linux.SecurityContext.SelinuxOptions = label
	_, err := e.d.runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "selinux_options") || !strings.Contains(err.Error(), "SELinux") {
		t.Errorf("a pod with an SELinux label: %v, want FailedPrecondition naming selinux_options", err)
	}
	podID, pod := e.pod(t, "selinux")
	ctr := ctrConfig("labelled", e.image("plain"), "true")
	ctr.Linux.SecurityContext.SelinuxOptions = label
	_, err = e.d.runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: ctr, SandboxConfig: pod})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "selinux_options") {
		t.Errorf("a container with an SELinux label: %v, want FailedPrecondition naming selinux_options", err)
	}
	ctr = ctrConfig("unlabelled", e.image("plain"), "true")
	ctr.Linux.SecurityContext.SelinuxOptions = &runtimeapi.SELinuxOption{}
	if st, _ := e.runToEnd(t, podID, pod, ctr); st.ExitCode != 0 {
		t.Errorf("an empty SELinux option: exit %d (%s)", st.ExitCode, st.Message)
	}
	resp, err := e.d.runtime.Status(context.Background(), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	if lsm := resp.Info["lsm"]; !strings.Contains(lsm, `"selinux":"not enabled`) || !strings.Contains(lsm, `"apparmor":`) {
		t.Errorf("Status' lsm: %q", lsm)
	}
	stopPod(t, e.d, podID)
	removePod(t, e.d, podID)
	if after := countLeaks(t, e.d); after != before {
		t.Errorf("leaks: before %+v after %+v", before, after)
	}
}
