package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

func TestBuiltinLaunch(t *testing.T) {
	sealed, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sealed.Close() }()
	adj := 500
	c := &Container{
		ID: "c1", Bundle: "/b/c1", StateDir: "/s/c1",
		Spec: &specs.Spec{
			Process: &specs.Process{OOMScoreAdj: &adj},
			Linux:   &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.PIDNamespace}}},
		},
		Namespaces:  map[ns.Type]string{ns.Net: "/n", ns.IPC: "/i", ns.UTS: "/u", ns.User: "/us"},
		CgroupProcs: []string{"/sys/fs/cgroup/x/cgroup.procs"},
	}
	var a monitor.Args
	files, err := (&Builtin{Binary: sealed}).Launch(c, &a)
	if err != nil {
		t.Fatal(err)
	}
	want := monitor.Args{
		ExecFD: monitor.FirstExtraFD, Cgroups: c.CgroupProcs, NetNS: "/n", IPCNS: "/i", UTSNS: "/u", UserNS: "/us",
		OOMScoreAdj: &adj, NewPID: true, Program: []string{"husk-runtime", "container-init", "/b/c1"},
	}
	if !reflect.DeepEqual(a, want) || len(files) != 1 || files[0] != sealed {
		t.Errorf("Launch: %+v, files %v; want %+v and the sealed binary", a, files, want)
	}
	// The pod's PID namespace, by path; none at all: the host's.
	c.Spec.Linux.Namespaces[1].Path = "/proc/9/ns/pid"
	a = monitor.Args{}
	if _, err := (&Builtin{Binary: sealed}).Launch(c, &a); err != nil || a.PIDNS != "/proc/9/ns/pid" || a.NewPID {
		t.Errorf("pod PID namespace: %+v, %v", a, err)
	}
	c.Spec.Linux.Namespaces = c.Spec.Linux.Namespaces[:1]
	a = monitor.Args{}
	if _, err := (&Builtin{Binary: sealed}).Launch(c, &a); err != nil || a.PIDNS != "" || a.NewPID {
		t.Errorf("host PID namespace: %+v, %v", a, err)
	}
}

func TestBinaryLaunch(t *testing.T) {
	c := &Container{ID: "c1", Bundle: "/b/c1", StateDir: "/s/c1", Spec: &specs.Spec{}}
	b := &Binary{Name: "runc", Path: "/usr/sbin/runc", Root: "/r/runc"}
	var a monitor.Args
	files, err := b.Launch(c, &a)
	if err != nil || len(files) != 0 {
		t.Fatalf("Launch: %v, %v", files, err)
	}
	want := monitor.Args{
		RuntimePIDFile: "/s/c1/runtime.pid", OOMNotify: true,
		Program: []string{"/usr/sbin/runc", "--root", "/r/runc", "run", "--bundle", "/b/c1", "--pid-file", "/s/c1/runtime.pid", "c1"},
	}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("Launch on cgroup v1: %+v; want %+v", a, want)
	}
	b.Unified = true
	if _, err := b.Launch(c, &a); err != nil || a.OOMNotify {
		t.Errorf("Launch on cgroup v2 listens for OOMs: %+v, %v", a, err)
	}
	gone := &Binary{Name: "old", Root: "/r/old"}
	if _, err := gone.Launch(c, &a); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("a handler no longer configured launched: %v", err)
	}
	if err := gone.Delete(context.Background(), "c1"); !errors.Is(err, ErrGone) {
		t.Errorf("a handler no longer configured deleted: %v", err)
	}
}

func TestBinaryLimits(t *testing.T) {
	mem, pids := int64(64<<20), int64(10)
	r := &specs.LinuxResources{
		Memory:         &specs.LinuxMemory{Limit: &mem},
		Pids:           &specs.LinuxPids{Limit: &pids},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 0}},
		Devices:        []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	b := &Binary{}
	outer := b.OuterLimits(r)
	if len(outer.Devices) != 4 || len(r.Devices) != 1 || outer.Memory != r.Memory {
		t.Errorf("outer limits: %+v (the spec's: %+v)", outer, r)
	}
	inner := b.InnerLimits(r)
	if inner.Memory != nil || inner.HugepageLimits != nil || inner.Pids != r.Pids || r.Memory == nil {
		t.Errorf("inner limits on cgroup v1 without hugetlb: %+v", inner)
	}
	b.Unified, b.Hugetlb = true, true
	if inner := b.InnerLimits(r); inner.Memory != r.Memory || len(inner.HugepageLimits) != 1 {
		t.Errorf("inner limits on cgroup v2 with hugetlb: %+v", inner)
	}
	if b.OuterLimits(nil) != nil || b.InnerLimits(nil) != nil {
		t.Error("limits made up from none")
	}
	s := &specs.Spec{Linux: &specs.Linux{CgroupsPath: "/kubepods/pod1/c1", Resources: r}}
	if err := b.PrepareSpec(s); err != nil || s.Linux.CgroupsPath != "/kubepods/pod1/c1/runtime" || s.Linux.Resources.Memory != r.Memory {
		t.Errorf("PrepareSpec: %+v, %v", s.Linux, err)
	}
	if got := b.ProcessCgroup("/kubepods/pod1/c1"); got != "/kubepods/pod1/c1/runtime" {
		t.Errorf("ProcessCgroup: %s", got)
	}
	// The runtime itself beside the container, never in or above the
	// cgroup it kills when the container ends.
	if got := b.LaunchCgroup("/kubepods/pod1/c1"); got != "/kubepods/pod1/c1/launcher" {
		t.Errorf("LaunchCgroup: %s", got)
	}
}

// TestBinaryInit: the runtime's state.json names the container's init; a
// missing, half-written or pid-less one names none.
func TestBinaryInit(t *testing.T) {
	root := t.TempDir()
	b := &Binary{Name: "runc", Path: "/usr/sbin/runc", Root: root}
	c := &Container{ID: "c1"}
	if p := b.Init(c, nil); p != nil {
		t.Errorf("no state: %+v", p)
	}
	if err := os.MkdirAll(filepath.Join(root, "c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	for content, want := range map[string]*Process{
		`{"id":"c1","init_process_pid":4242,"init_process_start":987654,"created":"2026-01-01T00:00:00Z"}`: {PID: 4242, StartTime: 987654},
		`{"id":"c1","init_process_pid":42`: nil,
		`{"id":"c1","init_process_pid":0}`: nil,
		``:                                 nil,
	} {
		if err := os.WriteFile(filepath.Join(root, "c1", "state.json"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := b.Init(c, &Process{PID: 1}); !reflect.DeepEqual(got, want) {
			t.Errorf("state %q: %+v; want %+v", content, got, want)
		}
	}
}

// TestBinaryWaitStarted: started once the runtime wrote its pid file;
// exited early if the monitor recorded an exit before it did.
func TestBinaryWaitStarted(t *testing.T) {
	dir := t.TempDir()
	b := &Binary{Name: "runc", Path: "/usr/sbin/runc"}
	c := &Container{ID: "c1", StateDir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.WaitStarted(ctx, c); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("nothing written: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, monitor.ExitFile), []byte("1 1700000000000000000 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var early *ExitedEarly
	if err := b.WaitStarted(context.Background(), c); !errors.As(err, &early) || early.Code != 1 || early.Runtime != "runc" {
		t.Errorf("exit without a pid file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, monitor.ExitFile), []byte("1 17"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitStarted(context.Background(), c); !errors.As(err, &early) || early.Code != -1 {
		t.Errorf("half-written exit without a pid file: %v", err)
	}
	// A short command ran and ended: both files.
	if err := os.WriteFile(filepath.Join(dir, monitor.RuntimePIDFile), []byte("4242"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitStarted(context.Background(), c); err != nil {
		t.Errorf("pid file written: %v", err)
	}
}

func TestBinaryInitFromRuncOrCrunRecords(t *testing.T) {
	root := t.TempDir()
	b := &Binary{Name: "x", Path: "/bin/true", Root: root}
	record := func(id, name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, id), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, id, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	record("runc", "state.json", `{"id":"runc","init_process_pid":123,"init_process_start":456}`)
	record("crun", "status", "{\n    \"pid\" : 321,\n    \"process-start-time\" : 654,\n    \"cgroup-path\" : \"/x\"\n}\n")
	record("torn", "status", `{"pid" : 3`)
	for id, want := range map[string]*Process{
		"runc": {PID: 123, StartTime: 456}, "crun": {PID: 321, StartTime: 654}, "torn": nil, "none": nil,
	} {
		if got := b.Init(&Container{ID: id}, nil); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: init %+v, want %+v", id, got, want)
		}
	}
}

func TestBinaryFeaturesAreProbed(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rro := script("rro", `[ "$1" = features ] && echo '{"ociVersionMin":"1.0.0","mountOptions":["ro","rro"],"linux":{"namespaces":["user"]}}'`)
	none := script("none", `[ "$1" = features ] && echo '{"mountOptions":["ro"]}'`)
	old := script("old", `echo "unknown command $1" >&2; exit 1`)
	for path, want := range map[string]Features{rro: {RecursiveReadOnlyMounts: true}, none: {}, old: {}, "": {}} {
		b := &Binary{Name: filepath.Base(path), Path: path}
		if got := b.Features(); got != want {
			t.Errorf("%s: %+v, want %+v (never user namespaces: husk makes those with its own runtime)", path, got, want)
		}
	}
}
