package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
)

type sysctl struct {
	name, path, value string
	net               bool // else IPC
}

// namespacedSysctls are the sysctls whose value belongs to a namespace the
// pod owns (network or IPC): setting them cannot change the host. Any other
// sysctl would, and is refused.
func classifySysctl(name string) (net, ok bool) {
	switch {
	case strings.HasPrefix(name, "net."):
		return true, true
	case strings.HasPrefix(name, "kernel.shm"), strings.HasPrefix(name, "kernel.msg"),
		name == "kernel.sem", strings.HasPrefix(name, "fs.mqueue."):
		return false, true
	}
	return false, false
}

// parseSysctls checks the pod's sysctls before anything is made: each must
// be namespaced, and its namespace must be the pod's own.
func parseSysctls(in map[string]string, hostNetwork, hostIPC bool) ([]sysctl, error) {
	var out []sysctl
	for name, value := range in {
		field := fmt.Sprintf("linux.sysctls[%s]", name)
		// Both "net.ipv4.ip_forward" and "net/ipv4/ip_forward" are accepted;
		// in the slash form, dots belong to a name (an interface "eth0.100").
		dotted, path := name, name
		if strings.Contains(name, "/") {
			dotted = strings.ReplaceAll(name, "/", ".")
		} else {
			path = strings.ReplaceAll(name, ".", "/")
		}
		if name == "" || strings.Contains(path, "..") || strings.HasPrefix(path, "/") || filepath.Clean(path) != path {
			return nil, fmt.Errorf("%s: not a sysctl name: %w", field, errdefs.ErrInvalidArgument)
		}
		if strings.ContainsAny(value, "\n\x00") {
			return nil, fmt.Errorf("%s: value holds a newline: %w", field, errdefs.ErrInvalidArgument)
		}
		// A directory of sysctls ("net.ipv4") is no sysctl; per-pod
		// names (an interface's) may exist only in the pod.
		if fi, err := os.Stat(filepath.Join("/proc/sys", path)); err == nil && fi.IsDir() {
			return nil, fmt.Errorf("%s: a directory of sysctls, not a sysctl: %w", field, errdefs.ErrInvalidArgument)
		}
		isNet, ok := classifySysctl(dotted)
		if !ok {
			return nil, fmt.Errorf("%s: not a namespaced sysctl; setting it would change the host: %w", field, errdefs.ErrInvalidArgument)
		}
		if isNet && hostNetwork {
			return nil, fmt.Errorf("%s: the pod uses the host's network namespace; setting it would change the host: %w", field, errdefs.ErrInvalidArgument)
		}
		if !isNet && hostIPC {
			return nil, fmt.Errorf("%s: the pod uses the host's IPC namespace; setting it would change the host: %w", field, errdefs.ErrInvalidArgument)
		}
		out = append(out, sysctl{name: name, path: path, value: value, net: isNet})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// applySysctls writes sysctls from a thread inside the pod's namespaces:
// /proc/sys/net and the IPC sysctls show the namespaces of the thread that
// opens them.
func applySysctls(ss []sysctl) error {
	for _, s := range ss {
		p := filepath.Join("/proc/sys", s.path)
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			if os.IsNotExist(err) {
				return fmt.Errorf("linux.sysctls[%s]: no such sysctl: %w", s.name, errdefs.ErrInvalidArgument)
			}
			return fmt.Errorf("linux.sysctls[%s]: %w", s.name, err)
		}
		_, err = f.WriteString(s.value)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("linux.sysctls[%s]: setting %q: %v: %w", s.name, s.value, err, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
