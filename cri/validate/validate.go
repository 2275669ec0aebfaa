// Package validate checks CRI requests before anything is made for them:
// the rules that follow from what Kubernetes allows (names, sizes) and from
// what the kernel will take (resource ranges, argument sizes), so that bad
// input is an InvalidArgument naming its field instead of a failure half-way
// through, and so that nothing is made that could not be removed again.
//
// Errors wrap errdefs.ErrInvalidArgument and start with the field's path as
// the CRI spells it ("config.metadata.name"); cri/ turns them into gRPC
// codes.
package validate

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// The limits (docs/limits.md lists them for users).
const (
	// MaxNameLength bounds pod and container names: a DNS-1123 subdomain.
	// Kubernetes' container names are labels (63), but cri-tools' own
	// suite names containers with up to 81 characters.
	MaxNameLength = 253
	// MaxNamespaceLength: a DNS-1123 label.
	MaxNamespaceLength = 63
	// MaxUIDLength bounds a pod's uid: kubelet's are UUIDs or hashes.
	MaxUIDLength = 128
	// MaxLabelsSize bounds the keys and values of an object's labels
	// together. Kubernetes bounds each label (a 317-character key, a
	// 63-character value) but not their number: this is some 170 labels
	// of the largest size, more than pods carry, and a List of a full node
	// stays small.
	MaxLabelsSize = 64 << 10
	// MaxAnnotationsSize bounds an object's annotations, keys and values
	// together: the API server's own limit (256 KiB), and room for what
	// kubelet adds to a pod that has that much (kubernetes.io/config.*).
	MaxAnnotationsSize = 256<<10 + 16<<10
	// MaxArgLength is the kernel's limit on one argument or environment
	// string (MAX_ARG_STRLEN, with its NUL).
	MaxArgLength = 128<<10 - 1
	// MaxArgsSize bounds a process's arguments and environment together:
	// what execve takes with the default 8 MiB stack (a quarter of it).
	// Service links in a namespace of many services make environments
	// large; past this the exec would fail anyway.
	MaxArgsSize = 2 << 20
	// MaxSupplementalGroups is the kernel's NGROUPS_MAX.
	MaxSupplementalGroups = 65536
	// MaxPathLength is the kernel's PATH_MAX.
	MaxPathLength = 4096
)

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// dnsName checks a DNS-1123 subdomain (dns1123Label with dots), letters of
// either case: cri-tools' suite, the CRI's reference client, names pods
// "PodSandbox-for-...", and nothing below husk cares about case.
func dnsName(field, v string, maxLen int, dots bool) error {
	if v == "" {
		return invalid(field, "is required")
	}
	if len(v) > maxLen {
		return invalid(field, "%d characters, at most %d", len(v), maxLen)
	}
	parts := []string{v}
	if dots {
		parts = strings.Split(v, ".")
	}
	for _, p := range parts {
		if p == "" || !alnum(p[0]) || !alnum(p[len(p)-1]) {
			return invalid(field, "%q: want letters, digits and '-'%s, starting and ending with a letter or digit", clip(v), dotsWord(dots))
		}
		for i := 0; i < len(p); i++ {
			if !alnum(p[i]) && p[i] != '-' {
				return invalid(field, "%q: want letters, digits and '-'%s, starting and ending with a letter or digit", clip(v), dotsWord(dots))
			}
		}
	}
	return nil
}

func dotsWord(dots bool) string {
	if dots {
		return " ('.' between parts)"
	}
	return ""
}

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Clip keeps error messages and log lines short: a value may be a MiB
// long.
func Clip(v string) string {
	if len(v) > 80 {
		return v[:80] + "..."
	}
	return v
}

func clip(v string) string { return Clip(v) }

// printable refuses control characters (a newline, a NUL, an escape):
// values that end up in files, paths or logs line by line.
func printable(field, v string) error {
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return invalid(field, "%q holds a control character", clip(v))
		}
	}
	return nil
}

// mapSize checks the total size of a map's keys and values, and that no key
// is empty.
func mapSize(field string, m map[string]string, limit int) error {
	n := 0
	for k, v := range m {
		if k == "" {
			return invalid(field, "a key is empty")
		}
		n += len(k) + len(v)
	}
	if n > limit {
		return invalid(field, "%d bytes of keys and values, at most %d", n, limit)
	}
	return nil
}

// labelsAndAnnotations checks the two maps every pod and container config
// carries into List answers.
func labelsAndAnnotations(f string, labels, annotations map[string]string) error {
	if err := mapSize(f+".labels", labels, MaxLabelsSize); err != nil {
		return err
	}
	return mapSize(f+".annotations", annotations, MaxAnnotationsSize)
}
