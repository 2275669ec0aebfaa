package spec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// defaultMounts are the filesystems every container gets, those of runc's
// and containerd's default spec, in mount order.
func defaultMounts(in Input, sc *runtimeapi.LinuxContainerSecurityContext) []specs.Mount {
	sysOpt := "ro"
	if sc.GetPrivileged() {
		sysOpt = "rw"
	}
	ms := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", sysOpt}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", sysOpt}},
	}
	if in.ShmPath != "" {
		ms = append(ms, specs.Mount{Destination: "/dev/shm", Type: "bind", Source: in.ShmPath, Options: []string{"rbind", "rprivate", "rw"}})
	} else {
		ms = append(ms, specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}})
	}
	// The pod's files follow the root's read-only flag, as in containerd: a
	// read-only container should not be able to rewrite its name resolution.
	rw := "rw"
	if sc.GetReadonlyRootfs() {
		rw = "ro"
	}
	for _, f := range []struct{ dst, src string }{
		{"/etc/hostname", in.HostnamePath}, {"/etc/hosts", in.HostsPath}, {"/etc/resolv.conf", in.ResolvConfPath},
	} {
		if f.src != "" {
			ms = append(ms, specs.Mount{Destination: f.dst, Type: "bind", Source: f.src, Options: []string{"rbind", "rprivate", rw}})
		}
	}
	return ms
}

// mounts returns the container's mounts and the propagation its rootfs
// needs: a CRI mount that receives host mounts (rslave) or shares them both
// ways (rshared) only works if the mounts above it propagate too.
func mounts(in Input, sc *runtimeapi.LinuxContainerSecurityContext) ([]specs.Mount, string, error) {
	var cri []specs.Mount
	propagation := ""
	for i, m := range in.Config.GetMounts() {
		field := fmt.Sprintf("config.mounts[%d]", i)
		mnt, err := criMount(in, i, m, field, cri)
		if err != nil {
			return nil, "", err
		}
		// The rootfs's propagation is the strongest a mount asks.
		switch m.GetPropagation() {
		case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			if propagation == "" {
				propagation = "rslave"
			}
		case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			propagation = "rshared"
		}
		cri = append(cri, mnt)
	}

	// A CRI mount hides every default at or below its destination (a /dev
	// volume takes /dev/pts with it): mounted first, they would only be
	// shadowed, and mounted after, they would cover the user's volume.
	var out []specs.Mount
	for _, d := range defaultMounts(in, sc) {
		if !slices.ContainsFunc(cri, func(m specs.Mount) bool { return within(d.Destination, m.Destination) }) {
			out = append(out, d)
		}
	}
	// Parents before children, so that /a/b is not hidden by a later /a;
	// stable, so that otherwise kubelet's order stands.
	slices.SortStableFunc(cri, func(a, b specs.Mount) int { return depth(a.Destination) - depth(b.Destination) })
	return append(out, cri...), propagation, nil
}

// criMount is the bind mount of the config's mount i, whose destination
// none of the earlier ones may have.
func criMount(in Input, i int, m *runtimeapi.Mount, field string, earlier []specs.Mount) (specs.Mount, error) {
	dst, err := containerPath(m.GetContainerPath(), field+".container_path")
	if err != nil {
		return specs.Mount{}, err
	}
	for _, o := range earlier {
		if o.Destination == dst {
			return specs.Mount{}, invalid(field+".container_path", "%q is also the destination of another mount", dst)
		}
	}
	// An id-mapped mount shows the files of the host's root as the
	// container's root: the runtime maps it with the pod's user
	// namespace, the only mapping a mount may ask for.
	idmapped := len(m.GetUidMappings()) > 0 || len(m.GetGidMappings()) > 0
	if idmapped && in.UserNamespace == "" {
		return specs.Mount{}, invalid(field+".uidMappings", "an id-mapped mount needs a pod with its own user namespace")
	}
	if idmapped && (!sameMappings(m.GetUidMappings(), in.UIDMappings) || !sameMappings(m.GetGidMappings(), in.GIDMappings)) {
		return specs.Mount{}, invalid(field+".uidMappings", "the mappings differ from the pod's user namespace")
	}
	var src string
	if img := m.GetImage(); img != nil && img.GetImage() != "" {
		if err := CheckImageVolume(m, field); err != nil {
			return specs.Mount{}, err
		}
		// The image store is the caller's: it mounts the image and
		// says where.
		var ok bool
		if src, ok = in.ImageVolumes[i]; !ok {
			return specs.Mount{}, fmt.Errorf("%s.image: the image volume was not mounted", field)
		}
	} else if src, err = hostPath(m.GetHostPath(), field+".host_path"); err != nil {
		return specs.Mount{}, err
	}
	opts, err := bindOptions(m, field)
	if err != nil {
		return specs.Mount{}, err
	}
	mnt := specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}
	if idmapped {
		mnt.UIDMappings, mnt.GIDMappings = in.UIDMappings, in.GIDMappings
	}
	return mnt, nil
}

// bindOptions are a CRI mount's options: its propagation, read-only (all
// the way down, or not) or not, then those it names.
func bindOptions(m *runtimeapi.Mount, field string) ([]string, error) {
	opts := []string{"rbind"}
	switch p := m.GetPropagation(); p {
	case runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
		opts = append(opts, "rprivate")
	case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
		opts = append(opts, "rslave")
	case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
		opts = append(opts, "rshared")
	default:
		return nil, invalid(field+".propagation", "unknown propagation %v", p)
	}
	switch {
	case m.GetRecursiveReadOnly():
		if !m.GetReadonly() || m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE {
			return nil, invalid(field+".recursive_read_only", "needs readonly and private propagation")
		}
		// "ro" too, so that a runtime without "rro" still gets the top
		// of the tree read-only.
		opts = append(opts, "ro", "rro")
	case m.GetReadonly():
		opts = append(opts, "ro")
	default:
		opts = append(opts, "rw")
	}
	return append(opts, m.GetMountOptions()...), nil
}

// CheckImageVolume validates a mount of an image (Mount.image): it has no
// host path, and it is read-only, as api.proto says every image mount is.
func CheckImageVolume(m *runtimeapi.Mount, field string) error {
	if m.GetHostPath() != "" {
		return invalid(field, "host_path and image are mutually exclusive")
	}
	if !m.GetReadonly() {
		return invalid(field+".readonly", "an image volume is read-only: readonly must be set")
	}
	return nil
}

func containerPath(p, field string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", invalid(field, "%q is not an absolute path", p)
	}
	if slices.Contains(strings.Split(p, "/"), "..") {
		return "", invalid(field, "%q contains a \"..\" component", p)
	}
	if strings.ContainsRune(p, 0) {
		return "", invalid(field, "%q contains a NUL byte", p)
	}
	p = filepath.Clean(p)
	if p == "/" {
		return "", invalid(field, "cannot mount over the container's root")
	}
	return p, nil
}

// hostPath resolves symlinks, as api.proto asks: the mount is of the real
// file. It creates nothing: kubelet makes the directories it wants.
func hostPath(p, field string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", invalid(field, "%q is not an absolute path", p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", invalid(field, "%q does not exist", p)
		}
		return "", fmt.Errorf("%s: resolving %q: %w", field, p, err)
	}
	return real, nil
}

// within reports whether p is dir or lies below it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

func depth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}
