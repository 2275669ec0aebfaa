package validate

import (
	"net"
	"path/filepath"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodSandboxConfig checks a RunPodSandbox config. Its metadata goes to CNI
// plugins as arguments and environment (K8S_POD_NAME, ...): a name they
// cannot take would make a pod whose network could never be torn down.
func PodSandboxConfig(cfg *runtimeapi.PodSandboxConfig) error {
	const f = "config"
	md := cfg.GetMetadata()
	if md == nil {
		return invalid(f+".metadata", "is required")
	}
	if err := dnsName(f+".metadata.name", md.GetName(), MaxNameLength, true); err != nil {
		return err
	}
	if err := dnsName(f+".metadata.namespace", md.GetNamespace(), MaxNamespaceLength, false); err != nil {
		return err
	}
	if err := uid(f+".metadata.uid", md.GetUid()); err != nil {
		return err
	}
	if err := labelsAndAnnotations(f, cfg.GetLabels(), cfg.GetAnnotations()); err != nil {
		return err
	}
	if d := cfg.GetLogDirectory(); d != "" {
		if err := AbsolutePath(f+".log_directory", d); err != nil {
			return err
		}
	}
	for i, pm := range cfg.GetPortMappings() {
		if ip := pm.GetHostIp(); ip != "" && net.ParseIP(ip) == nil {
			return invalid(fieldIndex(f+".port_mappings", i)+".host_ip", "%q is not an IP address", clip(ip))
		}
	}
	l := cfg.GetLinux()
	if err := printable(f+".linux.cgroup_parent", l.GetCgroupParent()); err != nil {
		return err
	}
	if len(l.GetCgroupParent()) > MaxPathLength {
		return invalid(f+".linux.cgroup_parent", "%d characters, at most %d", len(l.GetCgroupParent()), MaxPathLength)
	}
	for name, v := range l.GetSysctls() {
		field := f + ".linux.sysctls[" + clip(name) + "]"
		if err := printable(field, name); err != nil {
			return err
		}
		if err := printable(field, v); err != nil {
			return err
		}
	}
	if err := PodResources(f+".linux.resources", l.GetResources()); err != nil {
		return err
	}
	if err := PodResources(f+".linux.overhead", l.GetOverhead()); err != nil {
		return err
	}
	sc := l.GetSecurityContext()
	scField := f + ".linux.security_context"
	if err := ids(scField, sc.GetRunAsUser(), sc.GetRunAsGroup(), sc.GetSupplementalGroups()); err != nil {
		return err
	}
	return profile(scField+".seccomp", sc.GetSeccomp())
}

// uid: kubelet's pod uids are UUIDs, static pods' hashes; anything of
// letters, digits, '-', '_', '.' and ':' is taken.
func uid(field, v string) error {
	if v == "" {
		return invalid(field, "is required")
	}
	if len(v) > MaxUIDLength {
		return invalid(field, "%d characters, at most %d", len(v), MaxUIDLength)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !alnum(c) && !strings.ContainsRune("-_.:", rune(c)) {
			return invalid(field, "%q: want letters, digits, '-', '_', '.' or ':'", clip(v))
		}
	}
	return nil
}

// cleanAbsolute: an absolute path in its shortest form, no "..".
// AbsolutePath checks that a request's path is absolute, in its shortest
// form and without "..".
func AbsolutePath(field, p string) error { return cleanPath(field, p, true) }

// cleanPath checks a path in its shortest form without "..", absolute or
// relative as asked.
func cleanPath(field, p string, absolute bool) error {
	if err := printable(field, p); err != nil {
		return err
	}
	if len(p) > MaxPathLength {
		return invalid(field, "%d characters, at most %d", len(p), MaxPathLength)
	}
	if filepath.IsAbs(p) != absolute || filepath.Clean(p) != p || hasDotDot(p) || p == "." {
		if absolute {
			return invalid(field, "%q: want an absolute path without '..'", clip(p))
		}
		return invalid(field, "%q: want a relative path below the pod's log_directory, without '..'", clip(p))
	}
	return nil
}

func hasDotDot(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}

// ids checks run_as_user, run_as_group and supplemental_groups: ids the
// kernel can take (0 to 2^32-2; -1 is "unset" to the kernel), and no more
// groups than NGROUPS_MAX.
func ids(field string, user, group *runtimeapi.Int64Value, groups []int64) error {
	id := func(field string, v int64) error {
		if v < 0 || v > 1<<32-2 {
			return invalid(field, "%d is not an id", v)
		}
		return nil
	}
	if user != nil {
		if err := id(field+".run_as_user", user.GetValue()); err != nil {
			return err
		}
	}
	if group != nil {
		if err := id(field+".run_as_group", group.GetValue()); err != nil {
			return err
		}
	}
	if len(groups) > MaxSupplementalGroups {
		return invalid(field+".supplemental_groups", "%d groups, at most %d", len(groups), MaxSupplementalGroups)
	}
	for i, g := range groups {
		if err := id(fieldIndex(field+".supplemental_groups", i), g); err != nil {
			return err
		}
	}
	return nil
}

// profile checks a Localhost profile's path: absolute, and no ".." to leave
// the directory it names.
func profile(field string, p *runtimeapi.SecurityProfile) error {
	if p.GetProfileType() != runtimeapi.SecurityProfile_Localhost {
		return nil
	}
	return AbsolutePath(field+".localhost_ref", p.GetLocalhostRef())
}
