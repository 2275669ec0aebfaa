#!/bin/bash
# Boots the husk test guest (hack/vm/build-image.sh) under qemu, runs a
# script in it as root and exits with the script's exit code. The script's
# output (stdout and stderr) is streamed to this script's stdout as it runs.
#
#   hack/vm/run.sh [-s SHARE] [-t SECONDS] [-m MEM] [-c CPUS] SCRIPT [ARG...]
#
#   -s SHARE    directory shared with the guest (9p) on /husk: inputs in,
#               results out; the script runs with /husk as its working
#               directory. Default: a temporary directory, removed at the end.
#   -t SECONDS  boot-to-poweroff timeout (default 1800; $HUSK_VM_TIMEOUT)
#   -m MEM      guest memory (default 4G; $HUSK_VM_MEM)
#   -c CPUS     guest CPUs (default 2; $HUSK_VM_CPUS)
#
# The disk is opened with snapshot=on: every boot starts from the clean
# image and the guest's writes are dropped. The guest's console log is
# kept (its path printed) when the run fails; $HUSK_VM_LOG_DIR (default
# $HUSK_VM_CACHE/logs) holds it. Exit codes: the script's own; 124 when
# the timeout killed the guest; 125 when the guest ended without recording
# an exit code (boot failure, kernel panic); 126 for a usage or setup error.
# KVM is used only when the host CPU has vmx or svm; otherwise TCG.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
timeout=${HUSK_VM_TIMEOUT:-1800}
mem=${HUSK_VM_MEM:-4G}
cpus=${HUSK_VM_CPUS:-2}
share=
usage() {
	sed -n '5,6p' "$0" | sed 's/^# *//' >&2
	exit 126
}
while getopts s:t:m:c:h opt; do
	case $opt in
	s) share=$OPTARG ;;
	t) timeout=$OPTARG ;;
	m) mem=$OPTARG ;;
	c) cpus=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
script=$1
shift
[ -f "$script" ] || { echo "run.sh: no script $script" >&2; exit 126; }
command -v qemu-system-x86_64 >/dev/null || { echo "run.sh: qemu-system-x86_64 is missing (apt-get install qemu-system-x86)" >&2; exit 126; }

image=$("$here/build-image.sh") || exit 126
cache=$(dirname "$image")
logdir=${HUSK_VM_LOG_DIR:-$cache/logs}

tmpshare=
if [ -z "$share" ]; then
	share=$(mktemp -d "${TMPDIR:-/tmp}/husk-vm-share-XXXXXX")
	tmpshare=$share
fi
share=$(cd "$share" && pwd)
vm=$share/.vm
rm -rf "$vm"
mkdir -p "$vm" "$logdir"
console=$(mktemp "$logdir/console-$(date +%Y%m%d-%H%M%S)-XXXXXX.log")

qpid=
tpid=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
		kill "$qpid" 2>/dev/null || true
		wait "$qpid" 2>/dev/null || true
	fi
	if [ -n "$tpid" ]; then
		kill "$tpid" 2>/dev/null || true
		wait "$tpid" 2>/dev/null || true
	fi
	if [ -n "$tmpshare" ]; then
		rm -rf "$tmpshare"
	else
		rm -rf "$vm"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$script" "$vm/script"
{
	printf 'exec /bin/bash /husk/.vm/script'
	for a in "$@"; do printf " '%s'" "${a//\'/\'\\\'\'}"; done
	printf '\n'
} >"$vm/cmd"
: >"$vm/output"

accel=(-accel tcg -cpu max)
if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then
	accel=(-accel kvm -cpu host)
fi

start=$(date +%s)
# timeout(1) sends TERM, then KILL 10 s later; qemu exits on TERM.
timeout -k 10 "$timeout" qemu-system-x86_64 "${accel[@]}" -m "$mem" -smp "$cpus" \
	-nodefaults -no-user-config -no-reboot -display none -monitor none \
	-serial "file:$console" \
	-kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
	-append "root=/dev/vda rw rootfstype=ext4 console=ttyS0 panic=-1 net.ifnames=0 systemd.unified_cgroup_hierarchy=1 apparmor=1 security=apparmor" \
	-drive "file=$image/disk.img,format=raw,if=virtio,snapshot=on,cache=unsafe" \
	-virtfs "local,path=$share,mount_tag=husk,security_model=passthrough,id=husk" \
	-nic user,model=virtio-net-pci,restrict=on \
	-device virtio-rng-pci \
	</dev/null >>"$console" 2>&1 &
qpid=$!
tail -n +1 -f --pid="$qpid" "$vm/output" &
tpid=$!

qrc=0
wait "$qpid" || qrc=$?
qpid=
wait "$tpid" 2>/dev/null || true
tpid=
elapsed=$(($(date +%s) - start))

rc=
if [ -f "$vm/exit-code" ]; then
	rc=$(cat "$vm/exit-code")
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	echo "run.sh: the guest did not finish within ${timeout}s; console log: $console" >&2
	exit 124
fi
if [ -z "$rc" ]; then
	echo "run.sh: the guest ended (qemu exit $qrc) after ${elapsed}s without an exit code; console log: $console" >&2
	exit 125
fi
if [ "$rc" != 0 ]; then
	echo "run.sh: the script exited $rc after ${elapsed}s in the guest; console log: $console" >&2
else
	rm -f "$console"
fi
exit "$rc"
