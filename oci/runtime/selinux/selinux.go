// Package selinux is what the daemon knows of SELinux: whether the host
// has it. husk applies no SELinux labels; a request for one is refused
// (oci/runtime/spec.CheckSELinux) rather than ignored, since kubelet takes
// what a created container asked for as applied.
package selinux

import "golang.org/x/sys/unix"

// selinuxfsMagic is SELINUX_MAGIC (linux/magic.h).
const selinuxfsMagic = 0xf97cff8c

// Enabled reports whether the kernel has SELinux on: its filesystem is
// mounted where userspace finds it. (opencontainers/selinux decides the
// same way; this one check is all husk needs of it.)
func Enabled() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/selinux", &st) == nil && uint32(st.Type) == selinuxfsMagic
}
