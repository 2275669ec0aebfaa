#!/bin/sh
# Builds the CNI plugins husk uses (bridge, host-local, portmap, bandwidth;
# loopback for the pods an older husk attached with it, and for containerd
# in make bench-compare) from the github.com/containernetworking/plugins module pinned in
# go.mod, so nothing is downloaded from anywhere but the Go module proxy and
# the plugins always match the version husk was tested with.
#
#   hack/install-cni-plugins.sh [DIR]     (default /opt/cni/bin)
#
# A plugin is rebuilt only when its binary is older than go.mod (a version
# bump touches go.mod). portmap and bridge's ipMasq need iptables at run time.
set -eu

dir=${1:-/opt/cni/bin}
case $dir in /*) ;; *) dir=$(pwd)/$dir ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

module=github.com/containernetworking/plugins
version=$(go list -m -f '{{.Version}}' "$module")

mkdir -p "$dir"
for path in plugins/main/bridge plugins/ipam/host-local plugins/meta/portmap plugins/main/loopback plugins/meta/bandwidth; do
	name=${path##*/}
	if [ -x "$dir/$name" ] && [ "$dir/$name" -nt go.mod ]; then
		continue
	fi
	# Build next to the target and rename: a plugin that is running (or a
	# runtime about to exec it) never sees a half-written file, and replacing
	# a busy binary does not fail with ETXTBSY.
	tmp="$dir/.$name.tmp.$$"
	trap 'rm -f "$tmp"' EXIT INT TERM
	CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X $module/pkg/utils/buildversion.BuildVersion=$version" \
		-o "$tmp" "$module/$path"
	mv -f "$tmp" "$dir/$name"
	echo "installed $dir/$name ($module $version)"
done
