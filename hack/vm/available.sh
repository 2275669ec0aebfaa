#!/bin/sh
# Says whether this machine can run make vm-test, and if not why (on
# stderr, exit 1): an x86-64 Debian machine whose apt names a mirror that
# debootstrap can use. qemu, debootstrap and e2fsprogs are installed by
# make vm-deps; TCG needs no KVM.
set -eu
if [ "$(uname -m)" != x86_64 ]; then
	echo "the guest image is amd64 and this machine is $(uname -m)" >&2
	exit 1
fi
if [ ! -r "${HUSK_VM_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}" ]; then
	echo "apt names no Debian mirror for debootstrap (no /etc/apt/sources.list.d/debian.sources)" >&2
	exit 1
fi
if [ "$(id -u)" != 0 ]; then
	echo "building the guest image needs root" >&2
	exit 1
fi
