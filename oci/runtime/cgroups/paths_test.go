package cgroups

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestPodPath(t *testing.T) {
	long := strings.Repeat("a", 250) + ".slice"
	for _, tc := range []struct {
		driver      Driver
		parent, id  string
		want        string
		errContains string // "" means no error
	}{
		// cgroupfs: absolute paths, children named by ID
		{Cgroupfs, "/kubepods/burstable/pod123", "sb1", "/kubepods/burstable/pod123/sb1", ""},
		{Cgroupfs, "/kubepods/besteffort/pod123/", "sb1", "/kubepods/besteffort/pod123/sb1", ""},
		{Cgroupfs, "/kubepods//pod1", "sb1", "/kubepods/pod1/sb1", ""},
		{Cgroupfs, "", "sb1", "/husk/sb1", ""},
		{Cgroupfs, "/", "sb1", "/sb1", ""},
		{Cgroupfs, "/system.slice/k.slice", "sb1", "/system.slice/k.slice/sb1", ""}, // a path, even if systemd made it
		{Cgroupfs, "kubepods/pod1", "sb1", "", `"kubepods/pod1"`},
		{Cgroupfs, "kubepods-burstable-pod1.slice", "sb1", "", "is a systemd slice"},
		{Cgroupfs, "/kubepods/../etc", "sb1", "", `"/kubepods/../etc"`},
		{Cgroupfs, "/kubepods/./pod1", "sb1", "", `"/kubepods/./pod1"`},
		{Cgroupfs, "/kubepods", "", "", `sandbox ID ""`},
		{Cgroupfs, "/kubepods", "../x", "", `"../x"`},
		{Cgroupfs, "/kubepods", "a/b", "", `"a/b"`},
		{Cgroupfs, "/kubepods", "cgroup.procs", "", `"cgroup.procs"`},
		{Cgroupfs, "/kubepods", "tasks", "", `"tasks"`},
		{Cgroupfs, "/kubepods", "-x", "", `"-x"`},

		// systemd: the pod is a slice in kubelet's, laid out as systemd does
		{Systemd, "kubepods-burstable-pod123.slice", "sb1", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice/kubepods-burstable-pod123-husk_sb1.slice", ""},
		{Systemd, "kubepods.slice", "sb1", "/kubepods.slice/kubepods-husk_sb1.slice", ""},
		{Systemd, "a-b-c.slice", "x", "/a.slice/a-b.slice/a-b-c.slice/a-b-c-husk_x.slice", ""},
		{Systemd, "", "sb1", "/husk.slice/husk-husk_sb1.slice", ""},
		{Systemd, "-.slice", "sb1", "/husk_sb1.slice", ""},
		// a cgroupfs-style path ending in a slice names that slice
		{Systemd, "/test.slice", "sb1", "/test.slice/test-husk_sb1.slice", ""},
		{Systemd, "/kubepods.slice/kubepods-pod1.slice", "sb1", "/kubepods.slice/kubepods-pod1.slice/kubepods-pod1-husk_sb1.slice", ""},
		// a dash in the ID would open a slice: escaped as systemd-escape does
		{Systemd, "kubepods-pod1_2_3.slice", "sb-1", `/kubepods.slice/kubepods-pod1_2_3.slice/kubepods-pod1_2_3-husk_sb\x2d1.slice`, ""},
		// systemd's cg_escape: names that look like control files get "_"
		{Systemd, "cpu.slice", "x", "/_cpu.slice/cpu-husk_x.slice", ""},
		{Systemd, "_a.slice", "x", "/__a.slice/__a-husk_x.slice", ""},
		{Systemd, strings.Repeat("a", 245) + ".slice", "sb1", "", "longer than 255"},
		{Systemd, "/kubepods/burstable", "sb1", "", "is a path, but the cgroup driver is systemd"},
		{Systemd, "kubepods", "sb1", "", `"kubepods"`},
		{Systemd, "kubepods.scope", "sb1", "", `"kubepods.scope"`},
		{Systemd, ".slice", "sb1", "", `".slice"`},
		{Systemd, "-a.slice", "sb1", "", "starts with a dash"},
		{Systemd, "a-.slice", "sb1", "", "ends with a dash"},
		{Systemd, "a--b.slice", "sb1", "", "two dashes"},
		{Systemd, "a/b.slice", "sb1", "", `'/'`},
		{Systemd, "a@b.slice", "sb1", "", `'@'`},
		{Systemd, "../a.slice", "sb1", "", `'/'`},
		{Systemd, long, "sb1", "", "longer than 255"},
		{Systemd, "kubepods.slice", "a.b", "", `"a.b"`},
	} {
		m := &Manager{driver: tc.driver}
		got, err := m.PodPath(tc.parent, tc.id)
		if tc.errContains == "" {
			if err != nil || got != tc.want {
				t.Errorf("%s PodPath(%q, %q) = %q, %v; want %q", tc.driver, tc.parent, tc.id, got, err, tc.want)
			}
			continue
		}
		if err == nil || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.errContains) {
			t.Errorf("%s PodPath(%q, %q) = %q, %v; want an invalid argument error containing %s", tc.driver, tc.parent, tc.id, got, err, tc.errContains)
		}
	}
}

func TestContainerPath(t *testing.T) {
	for _, tc := range []struct {
		driver      Driver
		pod, id     string
		want        string
		errContains string
	}{
		{Cgroupfs, "/kubepods/pod1/sb1", "c1", "/kubepods/pod1/sb1/c1", ""},
		{Systemd, "/kubepods.slice/kubepods-pod1.slice/kubepods-pod1-husk_sb1.slice", "c1", "/kubepods.slice/kubepods-pod1.slice/kubepods-pod1-husk_sb1.slice/husk-c1.scope", ""},
		{Cgroupfs, "kubepods/pod1", "c1", "", `"kubepods/pod1"`},
		{Cgroupfs, "/", "c1", "", `"/"`},
		{Cgroupfs, "/a/../b", "c1", "", `"/a/../b"`},
		{Systemd, "/a/", "c1", "", `"/a/"`},
		{Cgroupfs, "/a", "", "", `container ID ""`},
		{Systemd, "/a", "..", "", `".."`},
		{Systemd, "/a", strings.Repeat("c", 201), "", "container ID"},
	} {
		m := &Manager{driver: tc.driver}
		got, err := m.ContainerPath(tc.pod, tc.id)
		if tc.errContains == "" {
			if err != nil || got != tc.want {
				t.Errorf("%s ContainerPath(%q, %q) = %q, %v; want %q", tc.driver, tc.pod, tc.id, got, err, tc.want)
			}
			continue
		}
		if err == nil || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.errContains) {
			t.Errorf("%s ContainerPath(%q, %q) = %q, %v; want an invalid argument error containing %s", tc.driver, tc.pod, tc.id, got, err, tc.errContains)
		}
	}
}

func TestBadPathsRefused(t *testing.T) {
	m := &Manager{driver: Cgroupfs}
	for _, p := range []string{"", "/", "relative", "/a/../b", "/a/", "//a"} {
		for name, err := range map[string]error{
			"Create":     m.Create(p, nil),
			"Update":     m.Update(p, nil),
			"Delete":     m.Delete(p),
			"AddProcess": m.AddProcess(p, 1),
		} {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("%s(%q) = %v, want invalid argument", name, p, err)
			}
		}
		if _, err := m.Pids(p); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Pids(%q) = %v, want invalid argument", p, err)
		}
		if _, err := m.Members(p); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Members(%q) = %v, want invalid argument", p, err)
		}
		if _, err := m.Stats(p, Full); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Stats(%q) = %v, want invalid argument", p, err)
		}
		if m.Exists(p) {
			t.Errorf("Exists(%q) = true", p)
		}
	}
}
