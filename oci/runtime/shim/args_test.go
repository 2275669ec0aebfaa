package shim

import (
	"reflect"
	"testing"

	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// TestMonitorReadsItsArgs: every field of monitor.Args that Argv writes,
// monitor.c's parser reads back as it was.
func TestMonitorReadsItsArgs(t *testing.T) {
	adj := -998
	for name, a := range map[string]monitor.Args{
		"built-in runtime, cgroupfs": {
			State: "/run/husk/containers/c1", LogDir: "/var/log/pods/p", Log: "c/0.log",
			OOM: "/sys/fs/cgroup/memory/c1/memory.oom_control", OOMNotify: true,
			NetNS: "/run/netns/a", IPCNS: "/run/ipc/a", UTSNS: "/run/uts/a", PIDNS: "/proc/7/ns/pid",
			ExecFD: 4, Cgroups: []string{"/sys/fs/cgroup/cpu/c1/cgroup.procs", "/sys/fs/cgroup/memory/c1/cgroup.procs"},
			OOMScoreAdj: &adj, TTY: true, Stdin: true, StdinOnce: true,
			Program: []string{"husk-runtime", "container-init", "/run/husk/bundles/c1"},
		},
		"user namespace, new pid namespace, systemd": {
			State: "/s", Log: "/dev/null", OOM: "/sys/fs/cgroup/c.scope/memory.events",
			OOMParent: "/sys/fs/cgroup/p.slice/memory.events", UserNS: "/run/userns/p", NewPID: true,
			ExecFD: 4, CgroupSync: 5, Program: []string{"husk-runtime", "container-init", "/b"},
		},
		"another runtime": {
			State: "/s", Log: "/dev/null", RuntimePIDFile: "/s/runtime.pid", CgroupSync: 4,
			Program: []string{"/usr/sbin/runc", "--root", "/r", "run", "--bundle", "/b", "--pid-file", "/s/runtime.pid", "c1"},
		},
		// What looks like a flag after -- is the program's.
		"program with flags": {State: "/s", Log: "/dev/null", Program: []string{"/bin/sh", "--tty", "-c", "--"}},
	} {
		got, ok := parseMonitorArgs(append([]string{}, a.Argv()...))
		if !ok {
			t.Errorf("%s: the monitor refused %q", name, a.Argv())
			continue
		}
		if !reflect.DeepEqual(got, a) {
			t.Errorf("%s: the monitor read\n%+v\nfrom %q, written from\n%+v", name, got, a.Argv(), a)
		}
	}
}

// TestMonitorRefusesWhatItCannotRun: the command lines the monitor exits
// 2 on rather than guess.
func TestMonitorRefusesWhatItCannotRun(t *testing.T) {
	for name, argv := range map[string][]string{
		"no state":                  {"monitor", "--log", "/dev/null", "--", "true"},
		"no log":                    {"monitor", "--state", "/s", "--", "true"},
		"no program":                {"monitor", "--state", "/s", "--log", "/dev/null", "--"},
		"unknown flag":              {"monitor", "--state", "/s", "--log", "/dev/null", "--bogus", "--", "true"},
		"flag without its value":    {"monitor", "--log", "/dev/null", "--state"},
		"both cgroups and the sync": {"monitor", "--state", "/s", "--log", "/dev/null", "--cgroup", "/c", "--cgroup-sync", "4", "--", "true"},
	} {
		if a, ok := parseMonitorArgs(argv); ok {
			t.Errorf("%s: %q read as %+v", name, argv, a)
		}
	}
}
