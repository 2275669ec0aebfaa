#!/bin/sh
# Builds what a one-node cluster on husk runs, from Go modules through the
# module proxy, into DIR (default bin/): Kubernetes' control plane,
# kube-proxy, kubelet, kubectl and kubeadm (hack/build-kubernetes.sh), etcd
# and CoreDNS. What is there already, of the same version, is kept: a
# rerun takes seconds, the first build some 25 minutes on two cores.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$(pwd)/bin}
etcd_version=${ETCD_VERSION:-v3.6.16}
coredns_version=${COREDNS_VERSION:-v1.15.0}
mkdir -p "$dir"

sh "$here/build-kubernetes.sh" "$dir" kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl kubeadm

# module@version, its main package, the binary's name; CGO off, so that
# the binary can be an image's only file (CoreDNS runs in a pod).
build() {
	if [ -x "$dir/$3" ] && [ "$(cat "$dir/.$3.version" 2>/dev/null)" = "$1" ]; then
		return
	fi
	work=$(mktemp -d)
	(
		cd "$work"
		printf 'module %sbuild\n\ngo 1.26.8\n\nrequire %s %s\n' "$3" "${1%@*}" "${1#*@}" > go.mod
		printf '//go:build tools\n\npackage %sbuild\n\nimport _ "%s"\n' "$3" "$2" > tools.go
		GOFLAGS=-mod=mod go mod tidy
		CGO_ENABLED=0 GOFLAGS=-mod=mod go build -o "$dir/$3" "$2"
	)
	rm -rf "$work"
	echo "$1" > "$dir/.$3.version"
	echo "built $dir/$3 ($1)"
}
build "go.etcd.io/etcd/server/v3@$etcd_version" go.etcd.io/etcd/server/v3 etcd
build "github.com/coredns/coredns@$coredns_version" github.com/coredns/coredns coredns
