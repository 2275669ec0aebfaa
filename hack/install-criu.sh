#!/bin/sh
# Builds CRIU, which husk's checkpoint and restore run, from the source
# Debian ships (criu 4.2.1, Debian's testing and unstable, from the mirror
# apt uses, its checksum pinned here) and installs the one binary into DIR.
#
#   hack/install-criu.sh [DIR]     (default bin)
#
# Not Debian 12's own package: criu 3.17 fails on kernels from 6.13 on,
# which map the vDSO's data in two areas ("Unexpected rt vDSO area
# bounds"), and trixie's 4.1.1 hung here dumping any process: it waits for a
# hardware breakpoint to catch its parasite's return, which this machine's
# paravirtualised CPU never fires; 4.2 checks that breakpoints work. Nothing is rebuilt when DIR/criu is that version already.
set -eu

version=4.2.1
sha256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
dir=${1:-bin}
case $dir in /*) ;; *) dir=$(pwd)/$dir ;; esac

if [ -x "$dir/criu" ] && "$dir/criu" --version 2>/dev/null | grep -q "^Version: $version\$"; then
	exit 0
fi

missing=""
for p in gcc make pkg-config xz-utils curl libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler \
	libnl-3-dev libnet1-dev libcap-dev libbsd-dev uuid-dev iptables tar; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi

# The mirror apt uses (a deb822 file on Debian 12, else sources.list).
mirror=$(sed -n 's|^URIs: *\(http[^ ]*/debian\)/*$|\1|p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(sed -n 's|^deb \(http[^ ]*/debian\)/* .*|\1|p' /etc/apt/sources.list 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

work=$(mktemp -d /tmp/husk-criu.XXXXXX)
trap 'rm -rf "$work"' EXIT
curl -fsS -o "$work/criu.tar.xz" "$mirror/pool/main/c/criu/criu_$version.orig.tar.xz"
echo "$sha256  $work/criu.tar.xz" | sha256sum -c --quiet
tar -C "$work" -xJf "$work/criu.tar.xz"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'criu*' | head -1)
# Only the binary: no documentation, no Python tools, no nftables
# (iptables locks the network while a restore runs).
make -C "$src" -j"$(nproc)" criu >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
mkdir -p "$dir"
install -m 0755 "$src/criu/criu" "$dir/.criu.tmp.$$"
mv -f "$dir/.criu.tmp.$$" "$dir/criu"
"$dir/criu" --version | head -1
