package cgroups

import (
	"fmt"
	"path"
	"strings"

	"github.com/containerd/errdefs"
)

// PodPath returns the cgroup of a pod sandbox: a child named for sandboxID
// under parent, the cgroup_parent kubelet put in the sandbox config.
//
// With the cgroupfs driver parent is an absolute cgroup path
// ("/kubepods/burstable/pod<uid>") and the child is "<sandboxID>". With the
// systemd driver parent is a slice unit ("kubepods-burstable-pod<uid>.slice",
// or a path ending in one) and the pod is a slice in it, "kubepods-burstable-pod<uid>-husk_<sandboxID>
// .slice", at the path systemd gives it ("/kubepods.slice/kubepods-burstable
// .slice/kubepods-burstable-pod<uid>.slice/kubepods-burstable-pod<uid>-husk_
// <sandboxID>.slice"). An empty parent means "/husk" or "husk.slice".
//
// Containers' cgroups are children of the pod's (ContainerPath), so on
// cgroup v2 no process may live in the pod cgroup itself: v2 refuses to give
// controllers to the children of a cgroup that holds processes. The
// sandbox's own process has a child cgroup of its own (SandboxInitPath).
//
// A parent that does not fit the driver (relative or ".." paths, malformed
// slice names, a slice given to cgroupfs or a path given to systemd) and bad
// IDs are errors wrapping errdefs.ErrInvalidArgument that name the value.
func (m *Manager) PodPath(parent, sandboxID string) (string, error) {
	if m.driver == Systemd {
		if parent == "" {
			parent = defaultSystemdParent
		}
		// The CRI names the parent "in cgroupfs style, converted if need
		// be": a path whose last element is a slice means that slice (as
		// containerd reads it; critest sends "/test.slice").
		if base := path.Base(parent); strings.HasPrefix(parent, "/") && strings.HasSuffix(base, ".slice") {
			parent = base
		}
		if _, err := SliceToPath(parent); err != nil {
			return "", err
		}
		if _, err := m.childName("sandbox", sandboxID); err != nil {
			return "", err
		}
		// A dash in a slice's name opens a nested slice: the ID's are
		// escaped as systemd-escape does.
		name := "husk_" + strings.ReplaceAll(sandboxID, "-", `\x2d`) + ".slice"
		if parent != "-.slice" {
			name = strings.TrimSuffix(parent, ".slice") + "-" + name
		}
		return SliceToPath(name)
	}
	if parent == "" {
		parent = defaultCgroupfsParent
	}
	base, err := cgroupfsParent(parent)
	if err != nil {
		return "", err
	}
	child, err := m.childName("sandbox", sandboxID)
	if err != nil {
		return "", err
	}
	return path.Join(base, child), nil
}

// SandboxInitPath returns the cgroup of a pod sandbox's own process (its
// init, which holds the namespaces): "init" below podPath, or with the
// systemd driver the scope "husk-<sandboxID>.scope" in the pod's slice
// (scope names are unique on the host).
func (m *Manager) SandboxInitPath(podPath, sandboxID string) (string, error) {
	if m.driver == Systemd {
		return m.ContainerPath(podPath, sandboxID)
	}
	return m.ContainerPath(podPath, "init")
}

// ContainerPath returns the cgroup of a container: a child of podPath (what
// PodPath returned) named "<containerID>", or "husk-<containerID>.scope" with
// the systemd driver.
func (m *Manager) ContainerPath(podPath, containerID string) (string, error) {
	if err := checkPath(podPath); err != nil {
		return "", fmt.Errorf("pod cgroup: %w", err)
	}
	child, err := m.childName("container", containerID)
	if err != nil {
		return "", err
	}
	return path.Join(podPath, child), nil
}

// childName checks an ID and names its cgroup. IDs become directory names
// next to the cgroup's control files, so only letters, digits, "_" and "-"
// are accepted (no ".", so no clash with "cgroup.procs" or "memory.max"),
// and v1's dotless control files are refused by name.
func (m *Manager) childName(what, id string) (string, error) {
	bad := id == "" || len(id) > 200 || id[0] == '-' ||
		strings.ContainsFunc(id, func(r rune) bool {
			return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '_' && r != '-'
		})
	switch id {
	case "tasks", "notify_on_release", "release_agent":
		bad = true
	}
	if bad {
		return "", fmt.Errorf("%w: %s ID %q: want 1 to 200 letters, digits, '_' or '-'", errdefs.ErrInvalidArgument, what, id)
	}
	if m.driver == Systemd {
		return "husk-" + id + ".scope", nil
	}
	return id, nil
}

// cgroupfsParent checks a cgroupfs driver cgroup_parent.
func cgroupfsParent(parent string) (string, error) {
	if !strings.HasPrefix(parent, "/") {
		if strings.HasSuffix(parent, ".slice") {
			return "", fmt.Errorf("%w: cgroup parent %q is a systemd slice, but the cgroup driver is cgroupfs (want an absolute path such as /kubepods)", errdefs.ErrInvalidArgument, parent)
		}
		return "", fmt.Errorf("%w: cgroup parent %q: the cgroupfs driver needs an absolute path", errdefs.ErrInvalidArgument, parent)
	}
	for _, c := range strings.Split(parent, "/") {
		if c == ".." || c == "." {
			return "", fmt.Errorf("%w: cgroup parent %q: %q is not allowed in a cgroup path", errdefs.ErrInvalidArgument, parent, c)
		}
	}
	return path.Clean(parent), nil
}

// SliceToPath returns where systemd puts the cgroup of a slice unit, as
// systemd's cg_slice_to_path does: each dash opens a nested slice, so
// "a-b-c.slice" is "/a.slice/a-b.slice/a-b-c.slice", and "-.slice" is the
// root "/". Names are checked as systemd checks slice names: a valid unit
// name (at most 255 characters of letters, digits, ":", "_", ".", "\" and
// "-", ending in ".slice") with no leading, trailing or doubled dash. Errors
// wrap errdefs.ErrInvalidArgument.
func SliceToPath(slice string) (string, error) {
	if slice == "-.slice" {
		return "/", nil
	}
	if strings.HasPrefix(slice, "/") {
		return "", fmt.Errorf("%w: cgroup parent %q is a path, but the cgroup driver is systemd (want a slice name such as kubepods.slice)", errdefs.ErrInvalidArgument, slice)
	}
	if err := checkSliceName(slice); err != nil {
		return "", err
	}
	prefix := strings.TrimSuffix(slice, ".slice")
	var b strings.Builder
	for i := 0; i < len(prefix); i++ {
		if prefix[i] == '-' {
			b.WriteString("/" + escapeCgroupName(prefix[:i]+".slice"))
		}
	}
	b.WriteString("/" + escapeCgroupName(slice))
	return b.String(), nil
}

func checkSliceName(slice string) error {
	fail := func(why string) error {
		return fmt.Errorf("%w: systemd slice %q: %s", errdefs.ErrInvalidArgument, slice, why)
	}
	if len(slice) > 255 {
		return fail("longer than 255 characters")
	}
	prefix, ok := strings.CutSuffix(slice, ".slice")
	if !ok || prefix == "" {
		return fail(`want a name ending in ".slice"`)
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == ':', c == '_', c == '.', c == '\\':
		case c == '-':
			switch {
			case i == 0:
				return fail("starts with a dash")
			case i == len(prefix)-1:
				return fail("ends with a dash")
			case prefix[i+1] == '-':
				return fail("has two dashes in a row")
			}
		default:
			return fail(fmt.Sprintf("character %q is not allowed in a unit name", c))
		}
	}
	return nil
}

// systemdControllers are the names systemd's cg_escape protects: a unit
// called "<controller>.<suffix>" would look like a control file.
var systemdControllers = []string{
	"cpu", "cpuacct", "cpuset", "io", "blkio", "memory", "devices", "pids",
	"bpf-firewall", "bpf-devices", "bpf-foreign", "bpf-socket-bind", "bpf-restrict-network-interfaces",
}

// escapeCgroupName is systemd's cg_escape: names that could clash with
// cgroupfs control files get a "_" prefix.
func escapeCgroupName(name string) string {
	need := name == "" || name[0] == '_' || name[0] == '.' ||
		name == "notify_on_release" || name == "release_agent" || name == "tasks" ||
		strings.HasPrefix(name, "cgroup.")
	if !need {
		if dot := strings.LastIndexByte(name, '.'); dot >= 0 {
			for _, c := range systemdControllers {
				if name[:dot] == c {
					need = true
					break
				}
			}
		}
	}
	if need {
		return "_" + name
	}
	return name
}
