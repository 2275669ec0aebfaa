package spec

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/profiles/seccomp"
	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/oci/runtime/apparmor"
	"github.com/husk-runtime/husk/oci/runtime/selinux"
)

// DefaultCapabilities is the set of Docker and containerd: what most images
// assume they have, and nothing that reaches outside the container.
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// DefaultMaskedPaths and DefaultReadonlyPaths are containerd's, used when
// kubelet sends none (it normally sends its own, the same list).
var (
	DefaultMaskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	DefaultReadonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

const capField = scField + "capabilities."

// allCapabilities is every capability the running kernel has, so that a
// privileged container is not refused by an older kernel for a capability it
// lacks; the library's list is the fallback if /proc cannot tell.
func allCapabilities() []string {
	caps, err := capability.ListSupported()
	if err != nil {
		caps = capability.ListKnown()
	}
	out := make([]string, len(caps))
	for i, c := range caps {
		out[i] = "CAP_" + strings.ToUpper(c.String())
	}
	return out
}

// capName normalizes a CRI capability name ("net_admin", "CAP_NET_ADMIN")
// to the OCI form and rejects names no kernel knows.
func capName(name, field string) (string, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	n = strings.TrimPrefix(n, "CAP_")
	for _, c := range capability.ListKnown() {
		if strings.ToUpper(c.String()) == n {
			return "CAP_" + n, nil
		}
	}
	return "", invalid(field, "unknown capability %q", name)
}

// capabilities applies the CRI adds and drops to the default set in
// containerd's order: "ALL" adds first, then "ALL" drops, then the single
// names, so that add ALL + drop X means everything but X and drop ALL + add
// X means only X.
func capabilities(c *runtimeapi.Capability) (*specs.LinuxCapabilities, error) {
	set := slices.Clone(DefaultCapabilities)
	isAll := func(s string) bool { return strings.EqualFold(strings.TrimSpace(s), "ALL") }
	if slices.ContainsFunc(c.GetAddCapabilities(), isAll) {
		set = allCapabilities()
	}
	if slices.ContainsFunc(c.GetDropCapabilities(), isAll) {
		set = nil
	}
	for i, a := range c.GetAddCapabilities() {
		if isAll(a) {
			continue
		}
		n, err := capName(a, fmt.Sprintf(capField+"add_capabilities[%d]", i))
		if err != nil {
			return nil, err
		}
		if !slices.Contains(set, n) {
			set = append(set, n)
		}
	}
	for i, d := range c.GetDropCapabilities() {
		if isAll(d) {
			continue
		}
		n, err := capName(d, fmt.Sprintf(capField+"drop_capabilities[%d]", i))
		if err != nil {
			return nil, err
		}
		set = slices.DeleteFunc(set, func(s string) bool { return s == n })
	}
	return withAmbient(set, c)
}

// privilegedCapabilities ignores adds and drops: CRI's privileged means all
// capabilities. Ambient ones still apply, since they only affect a non-root
// process and a privileged pod may run one.
func privilegedCapabilities(c *runtimeapi.Capability) (*specs.LinuxCapabilities, error) {
	return withAmbient(allCapabilities(), c)
}

// withAmbient builds the OCI sets. Inheritable stays empty (CVE-2022-24769)
// except for ambient capabilities, which the kernel only raises when they
// are permitted and inheritable; an ambient capability outside the permitted
// set is refused rather than silently granted.
func withAmbient(set []string, c *runtimeapi.Capability) (*specs.LinuxCapabilities, error) {
	if set == nil {
		set = []string{}
	}
	out := &specs.LinuxCapabilities{
		Bounding:    slices.Clone(set),
		Effective:   slices.Clone(set),
		Permitted:   slices.Clone(set),
		Inheritable: []string{},
	}
	for i, a := range c.GetAddAmbientCapabilities() {
		field := fmt.Sprintf(capField+"add_ambient_capabilities[%d]", i)
		n, err := capName(a, field)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(set, n) {
			return nil, invalid(field, "%s is not among the container's capabilities; add it with add_capabilities", n)
		}
		if !slices.Contains(out.Ambient, n) {
			out.Ambient = append(out.Ambient, n)
			out.Inheritable = append(out.Inheritable, n)
		}
	}
	return out, nil
}

// CheckSELinux refuses an SELinux label (field names where it came from):
// husk applies none, and a pod must not run as if it had one. On a host
// without SELinux, as containerd does, an empty option is no request.
func CheckSELinux(field string, o *runtimeapi.SELinuxOption) error {
	if o.GetUser() == "" && o.GetRole() == "" && o.GetType() == "" && o.GetLevel() == "" {
		return nil
	}
	reason := "SELinux is not enabled on this node"
	if selinux.Enabled() {
		reason = "husk does not apply SELinux labels"
	}
	return fmt.Errorf("%s: %s: %w", field, reason, errdefs.ErrFailedPrecondition)
}

// protectedPaths returns the masked and read-only paths: kubelet's when it
// sends them, containerd's defaults when not. kubelet sends both lists
// empty for procMount: Unmasked, which it allows only in a pod with a user
// namespace of its own: there, two empty lists mean nothing masked. (The
// CRI cannot tell an empty list from none: a client that sends neither
// for a container with the host's users, as crictl does, gets the
// defaults.)
func protectedPaths(sc *runtimeapi.LinuxContainerSecurityContext, userns bool) (masked, readonly []string) {
	masked, readonly = sc.GetMaskedPaths(), sc.GetReadonlyPaths()
	if len(masked) == 0 && len(readonly) == 0 && userns {
		return nil, nil
	}
	if len(masked) == 0 {
		masked = DefaultMaskedPaths
	}
	if len(readonly) == 0 {
		readonly = DefaultReadonlyPaths
	}
	return slices.Clone(masked), slices.Clone(readonly)
}

// seccompProfile needs s's final capabilities: the default profile allows
// the syscalls a granted capability is about (CAP_SYS_ADMIN's mount, ...).
func seccompProfile(sc *runtimeapi.LinuxContainerSecurityContext, s *specs.Spec) (*specs.LinuxSeccomp, error) {
	kind, ref, field, err := requestedProfile("seccomp", sc.GetSeccomp(), "seccomp_profile_path",
		sc.GetSeccompProfilePath(), "docker/default") //nolint:staticcheck // older kubelets still send it
	if err != nil {
		return nil, err
	}
	switch kind {
	case "", "unconfined":
		// CRI: unset is the same as unconfined.
		return nil, nil
	case "runtime/default":
		prof, err := seccomp.GetDefaultProfile(s)
		if err != nil {
			return nil, fmt.Errorf("%s: building the default profile: %w", field, err)
		}
		return prof, nil
	}
	if !filepath.IsAbs(ref) {
		return nil, invalid(field, "%q is not an absolute path", ref)
	}
	body, err := os.ReadFile(ref)
	if err != nil {
		return nil, invalid(field, "reading profile: %v", err)
	}
	prof, err := seccomp.LoadProfile(string(body), s)
	if err != nil {
		return nil, invalid(field, "loading profile %s: %v", ref, err)
	}
	return prof, nil
}

// apparmorProfile is the AppArmor profile the container's process runs
// under, "" for none. CRI: unset and runtime/default are the runtime's
// default profile (a privileged container runs unconfined unless it names
// a profile of the node); a Localhost profile is named by localhost_ref,
// with or without the "localhost/" of the older field. A host without
// AppArmor runs containers unconfined, and cannot run one that names a
// profile of its own.
func apparmorProfile(sc *runtimeapi.LinuxContainerSecurityContext, enabled bool) (string, error) {
	kind, ref, field, err := requestedProfile("apparmor", sc.GetApparmor(), "apparmor_profile",
		sc.GetApparmorProfile()) //nolint:staticcheck // older kubelets still send it
	if err != nil {
		return "", err
	}
	switch kind {
	case "unconfined":
		return "", nil
	case "", "runtime/default":
		if !enabled || sc.GetPrivileged() {
			return "", nil
		}
		return apparmor.DefaultProfile, nil
	}
	// A profile name is one token of the policy language: no blanks or
	// control characters, which would also end the "exec NAME" the
	// runtime writes to the kernel.
	if ref == "" || strings.ContainsFunc(ref, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", invalid(field, "%q is not an AppArmor profile name", ref)
	}
	if !enabled {
		return "", fmt.Errorf("%s: profile %q: AppArmor is not enabled on this node: %w", field, ref, errdefs.ErrFailedPrecondition)
	}
	return ref, nil
}

// requestedProfile reads what a CRI security context asks of a profile
// kind (seccomp, apparmor): its SecurityProfile field when set, else the
// older string field oldName ("runtime/default" or one of aliases,
// "unconfined", "localhost/<ref>"). kind is "", "runtime/default",
// "unconfined" or "localhost"; field names what ref came from, for errors.
func requestedProfile(name string, p *runtimeapi.SecurityProfile, oldName, old string, aliases ...string) (kind, ref, field string, err error) {
	field = scField + name
	if p != nil {
		switch p.GetProfileType() {
		case runtimeapi.SecurityProfile_RuntimeDefault:
			return "runtime/default", "", field, nil
		case runtimeapi.SecurityProfile_Unconfined:
			return "unconfined", "", field, nil
		case runtimeapi.SecurityProfile_Localhost:
			// An AppArmor name may come with the old field's prefix; a
			// seccomp path never starts with it.
			return "localhost", strings.TrimPrefix(p.GetLocalhostRef(), "localhost/"), field + ".localhost_ref", nil
		default:
			return "", "", field, invalid(field+".profile_type", "unknown profile type %v", p.GetProfileType())
		}
	}
	field = scField + oldName
	switch {
	case old == "":
		return "", "", field, nil
	case old == "runtime/default" || slices.Contains(aliases, old):
		return "runtime/default", "", field, nil
	case old == "unconfined":
		return "unconfined", "", field, nil
	case strings.HasPrefix(old, "localhost/"):
		return "localhost", strings.TrimPrefix(old, "localhost/"), field, nil
	}
	return "", "", field, invalid(field, "unknown profile %q (want runtime/default, unconfined or localhost/<ref>)", old)
}
