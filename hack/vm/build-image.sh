#!/bin/bash
# Builds the Debian 12 guest that hack/vm/run.sh boots: a raw ext4 disk made
# from a debootstrap root (no loop mounts), and the guest's own kernel and
# initrd next to it. systemd is PID 1 and the kernel runs cgroup v2 only
# (the command line run.sh gives).
#
#   hack/vm/build-image.sh            prints the image's directory
#
# The image lives in $HUSK_VM_CACHE (default /var/cache/husk-vm), in a
# directory named after a hash of its recipe (this script and
# hack/vm/packages): it is built once and rebuilt only when the recipe
# changes; images of older recipes are removed. Packages come from the
# Debian mirror apt is configured with (/etc/apt/sources.list.d/debian.sources),
# read at run time. Needs root, debootstrap and e2fsprogs (mkfs.ext4 -d).
#
# In the guest, husk-vm-run.service mounts the 9p share tagged "husk" on
# /husk, runs /husk/.vm/cmd as root with its output in /husk/.vm/output,
# writes its exit code to /husk/.vm/exit-code and powers the guest off.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${HUSK_VM_CACHE:-/var/cache/husk-vm}
sources=${HUSK_VM_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
suite=bookworm
size=${HUSK_VM_DISK_SIZE:-8G}

hash=$(cat "$here/build-image.sh" "$here/packages" | sha256sum | cut -c1-16)
image=$cache/debian12-$hash

if [ -f "$image/done" ]; then
	echo "$image"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "build-image.sh: needs root (debootstrap)" >&2
	exit 1
fi
for tool in debootstrap mkfs.ext4; do
	command -v "$tool" >/dev/null || { echo "build-image.sh: $tool is missing (apt-get install debootstrap e2fsprogs)" >&2; exit 1; }
done

mkdir -p "$cache"
# One build at a time; a second caller waits and then finds it done.
exec 9>"$cache/.lock"
flock 9
if [ -f "$image/done" ]; then
	echo "$image"
	exit 0
fi

# The first deb822 stanza of type deb that has the suite: its first URI
# and its keyring.
read -r mirror keyring < <(awk -v suite="$suite" '
	function flush() {
		if (types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "( |$)") && uri != "" && !found) {
			print uri, (keyring == "" ? "-" : keyring); found = 1
		}
		types = suites = uri = keyring = ""
	}
	/^[ \t]*#/ { next }
	/^[ \t]*$/ { flush(); next }
	{
		key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
		if (key == "types") types = $0
		else if (key == "suites") suites = $0
		else if (key == "uris") { split($0, u, " "); uri = u[1] }
		else if (key == "signed-by") keyring = $0
	}
	END { flush() }' "$sources")
if [ -z "${mirror:-}" ]; then
	echo "build-image.sh: no deb stanza for $suite in $sources" >&2
	exit 1
fi

work=$(mktemp -d "$cache/.build-XXXXXX")
root=$work/root
cleanup() {
	# debootstrap mounts proc and sys in the target; a failed run can leave them.
	for m in "$root/proc" "$root/sys" "$root/dev/pts" "$root/dev"; do
		mountpoint -q "$m" 2>/dev/null && umount -l "$m"
	done
	rm -rf "$work"
}
trap cleanup EXIT

include=$(grep -v -e '^#' -e '^[[:space:]]*$' "$here/packages" | paste -sd, -)
echo "build-image.sh: debootstrap $suite from $mirror" >&2
keyopt=()
if [ "$keyring" != - ] && [ -f "$keyring" ]; then
	keyopt=(--keyring "$keyring")
fi
debootstrap --variant=minbase --include="$include" "${keyopt[@]}" \
	"$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
	tail -n 40 "$work/debootstrap.log" >&2
	[ -f "$root/debootstrap/debootstrap.log" ] && tail -n 40 "$root/debootstrap/debootstrap.log" >&2
	exit 1
}

# The guest's configuration.
echo husk-vm >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost husk-vm\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
printf '/dev/vda\t/\text4\trw,errors=remount-ro\t0\t0\n' >"$root/etc/fstab"
# The guest has no name service: the host's resolver is not copied in.
: >"$root/etc/resolv.conf"
printf '9pnet_virtio\n9p\n' >"$root/etc/modules-load.d/husk-vm.conf"
# Nothing to fetch or clean up in a guest that lives for one run.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
	systemd-timesyncd.service; do
	ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

cat >"$root/usr/local/sbin/husk-vm-run" <<'RUN'
#!/bin/sh
# Runs the command the host put in the share, records its output and exit
# code there (hack/vm/build-image.sh, hack/vm/run.sh).
console=/dev/console
mkdir -p /husk
if ! mountpoint -q /husk; then
	modprobe -q 9pnet_virtio 2>/dev/null
	modprobe -q 9p 2>/dev/null
	if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=none husk /husk; then
		echo "husk-vm-run: cannot mount the 9p share husk" >"$console"
		exit 1
	fi
fi
if [ ! -f /husk/.vm/cmd ]; then
	echo "husk-vm-run: no /husk/.vm/cmd in the share" >"$console"
	exit 1
fi
# Networking: loopback, and the user-mode NIC if run.sh gave one.
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
	ip link set eth0 up
	ip addr add 10.0.2.15/24 dev eth0
	ip route add default via 10.0.2.2
fi
echo "husk-vm-run: running /husk/.vm/cmd" >"$console"
rc=0
(cd /husk && exec /bin/sh /husk/.vm/cmd) >/husk/.vm/output 2>&1 </dev/null || rc=$?
echo "$rc" >/husk/.vm/exit-code.tmp
mv /husk/.vm/exit-code.tmp /husk/.vm/exit-code
sync
echo "husk-vm-run: exit code $rc" >"$console"
exit 0
RUN
chmod 755 "$root/usr/local/sbin/husk-vm-run"

cat >"$root/etc/systemd/system/husk-vm-run.service" <<'UNIT'
[Unit]
Description=Run the husk VM test command from the 9p share
Wants=dbus.service
After=multi-user.target dbus.service
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/husk-vm-run
Environment=HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/husk-vm-run.service "$root/etc/systemd/system/multi-user.target.wants/husk-vm-run.service"

# The kernel and initrd boot from outside the disk (-kernel, -initrd).
kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
initrd=$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
	echo "build-image.sh: no kernel or initrd in the guest's /boot" >&2
	exit 1
fi
# The root disk needs virtio_blk, virtio_pci and ext4 before / is mounted:
# built in, or in the initrd (Debian's MODULES=most has them).
kver=${kernel##*/vmlinuz-}
listing=$(chroot "$root" lsinitramfs "/boot/initrd.img-$kver")
for mod in virtio_blk virtio_pci ext4; do
	if ! grep -q "/$mod.ko" "$root/lib/modules/$kver/modules.builtin" &&
		! grep -q "/$mod.ko" <<<"$listing"; then
		echo "build-image.sh: $mod is neither built into $kver nor in its initrd" >&2
		exit 1
	fi
done

mkdir -p "$work/out"
cp "$kernel" "$work/out/vmlinuz"
cp "$initrd" "$work/out/initrd.img"
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*_Packages
# mke2fs says "Creating regular file" even with -q: stdout is for the path.
mkfs.ext4 -q -F -L husk-vm -d "$root" "$work/out/disk.img" "$size" >&2
cp "$here/packages" "$work/out/packages"
{
	echo "recipe $hash"
	echo "mirror $mirror"
	echo "kernel ${kernel##*/}"
	echo "built $(date -u +%FT%TZ)"
} >"$work/out/done"

# Publish, then drop images of other recipes.
rm -rf "$image"
mv "$work/out" "$image"
for old in "$cache"/debian12-*; do
	[ "$old" = "$image" ] || rm -rf "$old"
done
echo "$image"
