package validate

import (
	"bytes"
	"fmt"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func fieldIndex(field string, i int) string { return fmt.Sprintf("%s[%d]", field, i) }

// ContainerConfig checks a CreateContainer config.
func ContainerConfig(cfg *runtimeapi.ContainerConfig) error {
	const f = "config"
	md := cfg.GetMetadata()
	if md == nil {
		return invalid(f+".metadata", "is required")
	}
	if err := dnsName(f+".metadata.name", md.GetName(), MaxNameLength, true); err != nil {
		return err
	}
	if cfg.GetImage().GetImage() == "" {
		return invalid(f+".image.image", "is required")
	}
	if err := labelsAndAnnotations(f, cfg.GetLabels(), cfg.GetAnnotations()); err != nil {
		return err
	}
	if err := Process(f, cfg.GetCommand(), cfg.GetArgs(), cfg.GetEnvs()); err != nil {
		return err
	}
	if p := cfg.GetLogPath(); p != "" {
		if err := LogPath(f+".log_path", p); err != nil {
			return err
		}
	}
	for i, m := range cfg.GetMounts() {
		if p := m.GetContainerPath(); len(p) > MaxPathLength {
			return invalid(fieldIndex(f+".mounts", i)+".container_path", "%d characters, at most %d", len(p), MaxPathLength)
		}
	}
	l := cfg.GetLinux()
	if err := Resources(f+".linux.resources", l.GetResources()); err != nil {
		return err
	}
	sc := l.GetSecurityContext()
	scField := f + ".linux.security_context"
	if err := ids(scField, sc.GetRunAsUser(), sc.GetRunAsGroup(), sc.GetSupplementalGroups()); err != nil {
		return err
	}
	if err := profile(scField+".seccomp", sc.GetSeccomp()); err != nil {
		return err
	}
	//nolint:staticcheck // older kubelets still send it
	if p, ok := strings.CutPrefix(sc.GetSeccompProfilePath(), "localhost/"); ok {
		return AbsolutePath(scField+".seccomp_profile_path", p)
	}
	return nil
}

// LogPath checks a container's log_path: a path below the pod's
// log_directory (kubelet's "NAME/ATTEMPT.log"), never leaving it.
func LogPath(field, p string) error { return cleanPath(field, p, false) }

// Process checks a process's command, arguments and environment against
// what execve takes: each string at most MAX_ARG_STRLEN, all together at
// most MaxArgsSize, no NUL in an environment value, no '=' or NUL in a name.
// prefix is the field holding them ("config").
func Process(prefix string, command, args []string, envs []*runtimeapi.KeyValue) error {
	total := 0
	for _, l := range []struct {
		field string
		v     []string
	}{{"command", command}, {"args", args}} {
		n, err := argSizes(join(prefix, l.field), l.v)
		if err != nil {
			return err
		}
		total += n
	}
	for i, e := range envs {
		field := fieldIndex(join(prefix, "envs"), i)
		k := e.GetKey()
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return invalid(field+".key", "%q is not an environment variable name", clip(k))
		}
		if bytes.IndexByte(e.GetValue(), 0) >= 0 {
			return invalid(field+".value", "holds a NUL")
		}
		if n := len(k) + 1 + len(e.GetValue()); n > MaxArgLength {
			return invalid(field, "%d bytes, at most %d", n, MaxArgLength)
		}
		total += len(k) + len(e.GetValue()) + 2
	}
	if total > MaxArgsSize {
		return invalid(join(prefix, "command"), "the arguments and environment add up to %d bytes, at most %d", total, MaxArgsSize)
	}
	return nil
}

// Command checks ExecSync's and Exec's cmd.
func Command(field string, cmd []string) error {
	if len(cmd) == 0 {
		return invalid(field, "is required")
	}
	n, err := argSizes(field, cmd)
	if err == nil && n > MaxArgsSize {
		err = invalid(field, "%d bytes, at most %d", n, MaxArgsSize)
	}
	return err
}

// argSizes checks each of a process's arguments and returns their size as
// execve counts it (with their NULs).
func argSizes(field string, v []string) (int, error) {
	total := 0
	for i, a := range v {
		if len(a) > MaxArgLength {
			return 0, invalid(fieldIndex(field, i), "%d bytes, at most %d", len(a), MaxArgLength)
		}
		total += len(a) + 1
	}
	return total, nil
}

func join(prefix, field string) string {
	if prefix == "" {
		return field
	}
	return prefix + "." + field
}
