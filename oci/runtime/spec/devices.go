package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// defaultDevices are the nodes of runc's default spec: what POSIX programs
// expect in /dev, none of which reaches host hardware.
func defaultDevices() []specs.LinuxDevice {
	mode := os.FileMode(0o666)
	var root uint32
	dev := func(path string, major, minor int64) specs.LinuxDevice {
		return specs.LinuxDevice{Path: path, Type: "c", Major: major, Minor: minor, FileMode: &mode, UID: &root, GID: &root}
	}
	return []specs.LinuxDevice{
		dev("/dev/null", 1, 3), dev("/dev/zero", 1, 5), dev("/dev/full", 1, 7),
		dev("/dev/random", 1, 8), dev("/dev/urandom", 1, 9), dev("/dev/tty", 5, 0),
	}
}

func allow(typ string, major, minor int64, access string) specs.LinuxDeviceCgroup {
	r := specs.LinuxDeviceCgroup{Allow: true, Type: typ, Access: access}
	if major >= 0 {
		r.Major = &major
	}
	if minor >= 0 {
		r.Minor = &minor
	}
	return r
}

// devices returns the device nodes to create and the device cgroup rules:
// deny everything, then allow the default nodes, the pty multiplexer and
// its slaves, mknod of any node (harmless: opening it stays denied) and the
// CRI devices. A privileged container may use every device, as CRI says,
// and has the host's device nodes in its /dev, as with containerd and
// CRI-O (device plugins, CSI drivers and node agents rely on it).
func devices(cri []*runtimeapi.Device, privileged bool) ([]specs.LinuxDevice, []specs.LinuxDeviceCgroup, error) {
	nodes := defaultDevices()
	rules := []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
	if privileged {
		rules = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
		nodes = withHostDevices(nodes, "/dev")
	} else {
		rules = append(rules, allow("c", -1, -1, "m"), allow("b", -1, -1, "m"))
		for _, d := range nodes {
			rules = append(rules, allow(d.Type, d.Major, d.Minor, "rwm"))
		}
		rules = append(rules, allow("c", 136, -1, "rwm"), allow("c", 5, 2, "rwm")) // /dev/pts/*, /dev/ptmx
	}
	for i, d := range cri {
		field := fmt.Sprintf("config.devices[%d]", i)
		dst, err := containerPath(d.GetContainerPath(), field+".container_path")
		if err != nil {
			return nil, nil, err
		}
		perms := d.GetPermissions()
		if perms == "" {
			perms = "rwm"
		}
		if strings.Trim(perms, "rwm") != "" {
			return nil, nil, invalid(field+".permissions", "%q: want letters of \"rwm\"", perms)
		}
		node, err := hostDevice(d.GetHostPath(), field+".host_path")
		if err != nil {
			return nil, nil, err
		}
		node.Path = dst
		replaced := false
		for j := range nodes {
			if nodes[j].Path == dst {
				nodes[j], replaced = node, true
			}
		}
		if !replaced {
			nodes = append(nodes, node)
		}
		if !privileged {
			rules = append(rules, allow(node.Type, node.Major, node.Minor, perms))
		}
	}
	return nodes, rules, nil
}

// withHostDevices adds the device nodes found below dir (symlinks not
// followed) to nodes, those nodes keeping their own. The directories of
// pseudo-terminals, shared memory and message queues are the container's
// own mounts, and the host's console is not the container's.
func withHostDevices(nodes []specs.LinuxDevice, dir string) []specs.LinuxDevice {
	have := map[string]bool{}
	for _, n := range nodes {
		have[n.Path] = true
	}
	_ = filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone meanwhile, or unreadable: not a device to pass
		}
		if de.IsDir() {
			switch de.Name() {
			case "pts", "shm", "mqueue", "fd", ".lxc", ".lxd-mounts", ".udev":
				if path != dir {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if de.Type()&(fs.ModeDevice|fs.ModeCharDevice) == 0 || path == filepath.Join(dir, "console") || have[path] {
			return nil
		}
		node, err := hostDevice(path, "")
		if err != nil {
			return nil
		}
		node.Path = path
		nodes = append(nodes, node)
		return nil
	})
	return nodes
}

// hostDevice describes the device node at path (symlinks followed, as
// /dev/disk/by-id names are links).
func hostDevice(path, field string) (specs.LinuxDevice, error) {
	if !strings.HasPrefix(path, "/") {
		return specs.LinuxDevice{}, invalid(field, "%q is not an absolute path", path)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return specs.LinuxDevice{}, invalid(field, "%q does not exist", path)
		}
		return specs.LinuxDevice{}, fmt.Errorf("%s: stat %q: %w", field, path, err)
	}
	var typ string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		typ = "c"
	case unix.S_IFBLK:
		typ = "b"
	default:
		return specs.LinuxDevice{}, invalid(field, "%q is not a device node", path)
	}
	mode := os.FileMode(st.Mode & 0o777)
	uid, gid := st.Uid, st.Gid
	return specs.LinuxDevice{
		Type: typ, Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev)),
		FileMode: &mode, UID: &uid, GID: &gid,
	}, nil
}
