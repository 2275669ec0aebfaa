package cgroups

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hasSystemd: systemd is PID 1 and listens on its private socket.
func hasSystemd() bool {
	comm, _ := os.ReadFile("/proc/1/comm")
	_, err := os.Stat("/run/systemd/private")
	return strings.TrimSpace(string(comm)) == "systemd" && err == nil
}

// Where the driver cannot work it says why when the daemon starts, rather
// than at the first pod.
func TestSystemdDriverRefusedWithoutSystemdOrV2(t *testing.T) {
	requireRoot(t)
	unified := cgroups.Mode() == cgroups.Unified
	if unified && hasSystemd() {
		t.Skip("this host has systemd on cgroup v2: the driver works here (TestSystemdDriverUnits)")
	}
	_, err := New(Systemd)
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("New(systemd) = %v, want unavailable", err)
	}
	want := "needs systemd as PID 1"
	if !unified {
		want = "cgroup v2 alone"
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("New(systemd) = %v, want it to say %q", err, want)
	}
}

func systemdManager(t *testing.T) *Manager {
	t.Helper()
	requireRoot(t)
	if cgroups.Mode() != cgroups.Unified || !hasSystemd() {
		t.Skip("needs systemd as PID 1 on cgroup v2 alone (make vm-test runs this in such a guest)")
	}
	m, err := New(Systemd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// systemctlShow reads one property of a unit as systemctl prints it.
func systemctlShow(t *testing.T, unit, prop string) string {
	t.Helper()
	out, err := exec.Command("systemctl", "show", "--value", "-p", prop, unit).Output()
	if err != nil {
		t.Fatalf("systemctl show %s %s: %v", unit, prop, err)
	}
	return strings.TrimSpace(string(out))
}

// The pod is a transient slice and each container a transient scope,
// delegated, that systemd made with the container's process in it; limits
// are unit properties as well as files; Delete stops the units and
// systemd removes their cgroups.
func TestSystemdDriverUnits(t *testing.T) {
	m := systemdManager(t)
	name := uniqueName(t)
	kubelet := name + "-pod1.slice" // kubelet's pod slice
	pod, err := m.PodPath(kubelet, "sb1")
	if err != nil {
		t.Fatal(err)
	}
	podUnit := name + "-pod1-husk_sb1.slice"
	if want := "/" + name + ".slice/" + name + "-pod1.slice/" + podUnit; pod != want {
		t.Fatalf("pod path %s, want %s", pod, want)
	}
	t.Cleanup(func() {
		// The parents systemd made for the pod's slice.
		_ = exec.Command("systemctl", "stop", name+"-pod1.slice", name+".slice").Run()
	})
	cleanupCgroup(t, m, pod)
	limit := int64(64 << 20)
	if err := m.Create(pod, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}); err != nil {
		t.Fatal(err)
	}
	if st := systemctlShow(t, podUnit, "ActiveState"); st != "active" {
		t.Errorf("pod slice %s is %s", podUnit, st)
	}
	if got := systemctlShow(t, podUnit, "MemoryMax"); got != fmt.Sprint(limit) {
		t.Errorf("pod slice MemoryMax %s, want %d", got, limit)
	}
	if got := readTrim(t, filepath.Join(m.mountpoint, pod, "memory.max")); got != fmt.Sprint(limit) {
		t.Errorf("pod memory.max %s, want %d", got, limit)
	}
	// Creating it again applies the limits again, and keeps the unit.
	limit2 := int64(96 << 20)
	if err := m.Create(pod, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit2}}); err != nil {
		t.Fatal(err)
	}
	if got := systemctlShow(t, podUnit, "MemoryMax"); got != fmt.Sprint(limit2) {
		t.Errorf("pod slice MemoryMax after a second Create %s, want %d", got, limit2)
	}

	ctr, err := m.ContainerPath(pod, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(ctr, nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a scope without a process: %v, want invalid argument", err)
	}
	p := startGated(t, "sleep 300")
	shares, quota, period := uint64(512), int64(50000), uint64(100000)
	res := &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &shares, Quota: &quota, Period: &period}}
	if err := m.Create(ctr, res, p.pid()); err != nil {
		t.Fatal(err)
	}
	if got := procCgroups(t, p.pid())[""]; got != ctr {
		t.Errorf("process in %s, want %s", got, ctr)
	}
	unit := "husk-c1.scope"
	for prop, want := range map[string]string{
		"ActiveState": "active", "Slice": podUnit, "Delegate": "yes",
		"CPUQuotaPerSecUSec": "500ms", "CPUWeight": fmt.Sprint(cgroup2.ConvertCPUSharesToCgroupV2Value(shares)),
	} {
		if got := systemctlShow(t, unit, prop); got != want {
			t.Errorf("scope %s: %s=%s, want %s", unit, prop, got, want)
		}
	}
	if got := readTrim(t, filepath.Join(m.mountpoint, ctr, "cpu.max")); got != "50000 100000" {
		t.Errorf("cpu.max %q", got)
	}
	// An update goes to systemd and to the files.
	quota = 20000
	if err := m.Update(ctr, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}}); err != nil {
		t.Fatal(err)
	}
	if got := systemctlShow(t, unit, "CPUQuotaPerSecUSec"); got != "200ms" {
		t.Errorf("after the update CPUQuotaPerSecUSec=%s", got)
	}
	if got := readTrim(t, filepath.Join(m.mountpoint, ctr, "cpu.max")); got != "20000 100000" {
		t.Errorf("after the update cpu.max %q", got)
	}

	// Another runtime's cgroup: a directory inside the delegated scope,
	// with the runtime moved in before controllers are enabled above it.
	q := startGated(t, "sleep 300")
	ctr2, _ := m.ContainerPath(pod, "c2")
	if err := m.Create(ctr2, nil, q.pid()); err != nil {
		t.Fatal(err)
	}
	inner := ctr2 + "/runtime"
	if err := m.Create(inner, nil, q.pid()); err != nil {
		t.Fatal(err)
	}
	if got := procCgroups(t, q.pid())[""]; got != inner {
		t.Errorf("runtime in %s, want %s", got, inner)
	}
	if err := m.Create(pod+"/plain", nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a plain directory in a slice: %v, want invalid argument", err)
	}

	// A scope whose process ends is gone with its cgroup: systemd removes it.
	q.kill()
	eventually(t, 30*time.Second, func() string {
		if m.Exists(ctr2) {
			return ctr2 + " still exists after its processes ended"
		}
		return ""
	})
	if err := m.Delete(pod); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Delete with a process left: %v, want failed precondition", err)
	}
	p.kill()
	if err := m.Delete(pod); err != nil {
		t.Fatal(err)
	}
	if m.Exists(pod) || m.Exists(ctr) {
		t.Error("cgroups left after Delete")
	}
	out, _ := exec.Command("systemctl", "list-units", "--all", "--no-legend", podUnit, unit).Output()
	if strings.TrimSpace(string(out)) != "" {
		t.Errorf("units left after Delete:\n%s", out)
	}
}

// A value systemd or the kernel refuses is the request's fault, and what
// Create made for it is undone.
func TestSystemdDriverRefusalUndoes(t *testing.T) {
	m := systemdManager(t)
	name := uniqueName(t)
	pod, err := m.PodPath(name+".slice", "sb1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec.Command("systemctl", "stop", name+".slice").Run() })
	cleanupCgroup(t, m, pod)
	if err := m.Create(pod, nil); err != nil {
		t.Fatal(err)
	}
	ctr, _ := m.ContainerPath(pod, "bad")
	p := startGated(t, "sleep 300")
	res := &specs.LinuxResources{Unified: map[string]string{"memory.high": "lots"}}
	err = m.Create(ctr, res, p.pid())
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("Create with memory.high=lots: %v, want invalid argument", err)
	}
	if m.Exists(ctr) {
		t.Error("the scope is left after a refused Create")
	}
	if errors.Is(err, os.ErrNotExist) {
		t.Errorf("refusal reads as a missing file: %v", err)
	}
}
