// Package spec turns a CRI container request into an OCI runtime spec.
//
// The result is what both the built-in runtime and runc-compatible binaries
// execute, so every CRI field that has an effect must show up here; what is
// only for husk itself (the monitor's stdin handling) goes to annotations.
package spec

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/oci/runtime/cgroups"
)

// Annotations for the container monitor: CRI's stdin flags decide how the
// monitor wires the container's stdin, which the OCI process has no field for.
const (
	AnnotationStdin     = "io.husk.stdin"
	AnnotationStdinOnce = "io.husk.stdin-once"
)

// DefaultPath is the PATH of a container whose image sets none; it is the
// one Docker and containerd use, so images behave the same here.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Input is everything Generate needs. Keeping the host-side decisions (which
// namespaces exist, where the pod's files are) in the caller lets Generate
// stay a function of its input plus read-only looks at the host and rootfs.
type Input struct {
	ID     string // container id
	Config *runtimeapi.ContainerConfig
	Pod    *runtimeapi.PodSandboxConfig
	Image  ocispec.ImageConfig // Entrypoint, Cmd, Env, User, WorkingDir, StopSignal
	// RootfsPath: host path of the container's root filesystem, already
	// mounted (overlay). Read only to resolve users and groups from its
	// /etc/passwd and /etc/group, which are opened inside it so that an
	// image's symlinks cannot point the lookup at host files.
	RootfsPath string
	// Pod files on the host, bind-mounted into the container unless a CRI
	// mount already targets the same container path: /etc/hostname,
	// /etc/hosts, /etc/resolv.conf. Empty means none.
	HostnamePath, HostsPath, ResolvConfPath string
	// ShmPath: the pod's /dev/shm (a tmpfs on the host) to bind; empty means
	// the container gets a tmpfs /dev/shm of its own (64 MiB).
	ShmPath string
	// Namespaces of the pod to join, as paths of pinned namespace files:
	// keys "network", "ipc", "uts", "pid". A missing network, ipc or uts key
	// means the host's (the namespace is left out of the spec). For pid the
	// container's NamespaceOptions.Pid decides: CONTAINER => a new one; POD
	// => the pod's when given, else a new one (the pod shares none); TARGET
	// => the path given (the target container's); NODE => the host's.
	// The mount namespace is always new.
	Namespaces  map[string]string
	CgroupsPath string // the container's cgroup path (cgroupfs style), goes to spec.Linux.CgroupsPath
	// CgroupNamespace gives the container a cgroup namespace of its own, so
	// that its /sys/fs/cgroup shows its own cgroup as the root (what
	// containerd does on cgroup v2 hosts). The caller knows the host's mode.
	CgroupNamespace bool
	// ImageVolumes are the host paths of the image volumes (mounts with an
	// image) the caller mounted, by the index of their Config.Mounts entry,
	// with any image_sub_path already resolved inside them.
	ImageVolumes map[int]string
	// UserNamespace is the pod's user namespace (a pinned file) when it has
	// one of its own, and UIDMappings and GIDMappings its mappings: the
	// container joins it, and CRI mounts may ask for these mappings only.
	UserNamespace            string
	UIDMappings, GIDMappings []specs.LinuxIDMapping
	// AppArmor: the host enforces AppArmor, so containers run under the
	// runtime default profile unless they ask otherwise. The caller makes
	// sure the profile the spec names is loaded.
	AppArmor bool
}

// invalid is the error for bad input: it wraps errdefs.ErrInvalidArgument so
// the CRI layer maps it to codes.InvalidArgument, and names the field.
func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// Generate builds the OCI runtime spec of a container. It reads the rootfs's
// /etc/passwd and /etc/group, stats CRI mount and device host paths and reads
// a localhost seccomp profile, but changes nothing on the host.
func Generate(in Input) (*specs.Spec, error) {
	cfg := in.Config
	if cfg == nil {
		return nil, invalid("config", "missing")
	}
	sc := cfg.GetLinux().GetSecurityContext()
	proc, err := process(in, sc)
	if err != nil {
		return nil, err
	}
	s := &specs.Spec{
		Version:     specs.Version,
		Process:     proc,
		Annotations: annotations(cfg),
		Root: &specs.Root{
			Path:     in.RootfsPath,
			Readonly: sc.GetReadonlyRootfs(),
		},
		Linux: &specs.Linux{
			CgroupsPath: in.CgroupsPath,
			UIDMappings: in.UIDMappings,
			GIDMappings: in.GIDMappings,
		},
	}
	if s.Linux.Namespaces, err = namespaces(in, sc); err != nil {
		return nil, err
	}
	if s.Mounts, s.Linux.RootfsPropagation, err = mounts(in, sc); err != nil {
		return nil, err
	}
	if err := confine(s, sc, in.AppArmor, in.UserNamespace != ""); err != nil {
		return nil, err
	}
	if err := resources(s, cfg, sc.GetPrivileged()); err != nil {
		return nil, err
	}
	return s, nil
}

// process is the container's process: its command, working directory,
// user and environment, from the config over the image's.
func process(in Input, sc *runtimeapi.LinuxContainerSecurityContext) (*specs.Process, error) {
	cfg := in.Config
	args, err := processArgs(cfg, in.Image)
	if err != nil {
		return nil, err
	}
	cwd, err := workingDir(cfg, in.Image)
	if err != nil {
		return nil, err
	}
	usr, home, err := resolveUser(in.RootfsPath, sc, in.Image.User)
	if err != nil {
		return nil, err
	}
	env, err := buildEnv(cfg, in.Image, in.Pod, home)
	if err != nil {
		return nil, err
	}
	return &specs.Process{
		Terminal:        cfg.GetTty(),
		User:            usr,
		Args:            args,
		Env:             env,
		Cwd:             cwd,
		NoNewPrivileges: sc.GetNoNewPrivs(),
	}, nil
}

// annotations are the config's, and whether the container keeps its
// stdin open (once).
func annotations(cfg *runtimeapi.ContainerConfig) map[string]string {
	a := cfg.GetAnnotations()
	if len(a) == 0 && !cfg.GetStdin() && !cfg.GetStdinOnce() {
		return nil
	}
	out := maps.Clone(a)
	if out == nil {
		out = map[string]string{}
	}
	if cfg.GetStdin() {
		out[AnnotationStdin] = "true"
	}
	if cfg.GetStdinOnce() {
		out[AnnotationStdinOnce] = "true"
	}
	return out
}

// confine sets what confines the process: its AppArmor profile, its
// capabilities and, unless privileged, its masked and read-only paths and
// its seccomp filter.
func confine(s *specs.Spec, sc *runtimeapi.LinuxContainerSecurityContext, appArmor, userns bool) error {
	var err error
	if err := CheckSELinux(scField+"selinux_options", sc.GetSelinuxOptions()); err != nil {
		return err
	}
	if s.Process.ApparmorProfile, err = apparmorProfile(sc, appArmor); err != nil {
		return err
	}
	if sc.GetPrivileged() {
		s.Process.Capabilities, err = privilegedCapabilities(sc.GetCapabilities())
	} else {
		s.Process.Capabilities, err = capabilities(sc.GetCapabilities())
	}
	if err != nil {
		return err
	}
	if !sc.GetPrivileged() {
		s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = protectedPaths(sc, userns)
		if s.Linux.Seccomp, err = seccompProfile(sc, s); err != nil {
			return err
		}
	}
	return nil
}

// resources sets the container's cgroup limits, its oom_score_adj and its
// devices.
func resources(s *specs.Spec, cfg *runtimeapi.ContainerConfig, privileged bool) error {
	res := cfg.GetLinux().GetResources()
	s.Linux.Resources = cgroups.ResourcesFromCRI(res)
	if s.Linux.Resources == nil {
		s.Linux.Resources = &specs.LinuxResources{}
	}
	if res != nil {
		adj := int(res.GetOomScoreAdj())
		s.Process.OOMScoreAdj = &adj
	}
	var err error
	if s.Linux.Devices, s.Linux.Resources.Devices, err = devices(cfg.GetDevices(), privileged); err != nil {
		return err
	}
	return nil
}

// processArgs applies Kubernetes' rule: command replaces the image's
// ENTRYPOINT and args its CMD, except that a command alone drops the CMD too
// (an image's CMD is meant as arguments to its own ENTRYPOINT).
func processArgs(cfg *runtimeapi.ContainerConfig, img ocispec.ImageConfig) ([]string, error) {
	command, args := cfg.GetCommand(), cfg.GetArgs()
	var out []string
	switch {
	case len(command) > 0:
		out = append(append(out, command...), args...)
	case len(args) > 0:
		out = append(append(out, img.Entrypoint...), args...)
	default:
		out = append(append(out, img.Entrypoint...), img.Cmd...)
	}
	if len(out) == 0 {
		return nil, invalid("config.command", "no command given and the image has no ENTRYPOINT or CMD")
	}
	return out, nil
}

func workingDir(cfg *runtimeapi.ContainerConfig, img ocispec.ImageConfig) (string, error) {
	dir, field := cfg.GetWorkingDir(), "config.working_dir"
	if dir == "" {
		dir, field = img.WorkingDir, "image config WorkingDir"
	}
	if dir == "" {
		return "/", nil
	}
	if !filepath.IsAbs(dir) {
		return "", invalid(field, "%q is not an absolute path", dir)
	}
	return filepath.Clean(dir), nil
}

// buildEnv merges the image's environment with the config's, a later value
// replacing an earlier one in place so that the order stays the image's.
// HOSTNAME is set as containerd does, because images and tools expect it;
// HOME as runc does, since the built-in runtime does not add it itself.
func buildEnv(cfg *runtimeapi.ContainerConfig, img ocispec.ImageConfig, pod *runtimeapi.PodSandboxConfig, home string) ([]string, error) {
	var keys []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	for _, kv := range img.Env {
		k, v, _ := strings.Cut(kv, "=")
		if k != "" {
			set(k, v)
		}
	}
	for i, e := range cfg.GetEnvs() {
		if e.GetKey() == "" || strings.ContainsAny(e.GetKey(), "=\x00") {
			return nil, invalid(fmt.Sprintf("config.envs[%d].key", i), "%q is not a valid variable name", e.GetKey())
		}
		if bytes.IndexByte(e.GetValue(), 0) >= 0 {
			return nil, invalid(fmt.Sprintf("config.envs[%d].value", i), "contains a NUL byte")
		}
		set(e.GetKey(), string(e.GetValue()))
	}
	if _, ok := vals["PATH"]; !ok {
		set("PATH", DefaultPath)
	}
	if _, ok := vals["HOSTNAME"]; !ok {
		host := pod.GetHostname()
		if host == "" {
			// A pod without a hostname of its own shares the host's UTS.
			host, _ = os.Hostname()
		}
		if host != "" {
			set("HOSTNAME", host)
		}
	}
	if _, ok := vals["HOME"]; !ok {
		if home == "" {
			home = "/"
		}
		set("HOME", home)
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + vals[k]
	}
	return out, nil
}

// namespaces lists the namespaces the container joins (with a path) or gets
// new (without); a namespace left out is the host's.
func namespaces(in Input, sc *runtimeapi.LinuxContainerSecurityContext) ([]specs.LinuxNamespace, error) {
	opts := sc.GetNamespaceOptions()
	const usernsField = "config.linux.security_context.namespace_options.userns_options"
	// The user namespace is the pod's: a container may repeat what the
	// pod has (kubelet does), not ask for another.
	switch u := opts.GetUsernsOptions(); {
	case u == nil:
	case u.GetMode() == runtimeapi.NamespaceMode_NODE && in.UserNamespace == "":
	case u.GetMode() == runtimeapi.NamespaceMode_POD && in.UserNamespace != "":
		if !sameMappings(u.GetUids(), in.UIDMappings) || !sameMappings(u.GetGids(), in.GIDMappings) {
			return nil, invalid(usernsField, "the mappings differ from the pod's user namespace")
		}
	default:
		return nil, invalid(usernsField, "mode %v: the pod's user namespace is %s", u.GetMode(), map[bool]string{true: "its own (POD)", false: "the host's (NODE)"}[in.UserNamespace != ""])
	}
	out := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	if in.UserNamespace != "" {
		out = append(out, specs.LinuxNamespace{Type: specs.UserNamespace, Path: in.UserNamespace})
	}
	for _, n := range []struct {
		key string
		typ specs.LinuxNamespaceType
	}{{"network", specs.NetworkNamespace}, {"ipc", specs.IPCNamespace}, {"uts", specs.UTSNamespace}} {
		if p := in.Namespaces[n.key]; p != "" {
			out = append(out, specs.LinuxNamespace{Type: n.typ, Path: p})
		}
	}
	pidPath := in.Namespaces["pid"]
	switch mode := opts.GetPid(); mode {
	case runtimeapi.NamespaceMode_CONTAINER:
		out = append(out, specs.LinuxNamespace{Type: specs.PIDNamespace})
	case runtimeapi.NamespaceMode_POD:
		// POD is also what an unset option reads as; a pod whose processes
		// do not share a PID namespace has none to join.
		out = append(out, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: pidPath})
	case runtimeapi.NamespaceMode_TARGET:
		if pidPath == "" {
			return nil, invalid("config.linux.security_context.namespace_options.pid", "TARGET %q has no PID namespace to join", opts.GetTargetId())
		}
		out = append(out, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: pidPath})
	case runtimeapi.NamespaceMode_NODE:
	default:
		return nil, invalid("config.linux.security_context.namespace_options.pid", "unknown mode %v", mode)
	}
	if in.CgroupNamespace {
		out = append(out, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	return out, nil
}

var errInvalid = errdefs.ErrInvalidArgument

// sameMappings tells whether CRI id mappings are the ones given; none
// given in the request means the pod's.
func sameMappings(cri []*runtimeapi.IDMapping, want []specs.LinuxIDMapping) bool {
	if len(cri) == 0 {
		return true
	}
	if len(cri) != len(want) {
		return false
	}
	for i, m := range cri {
		if m.GetContainerId() != want[i].ContainerID || m.GetHostId() != want[i].HostID || m.GetLength() != want[i].Size {
			return false
		}
	}
	return true
}
