#!/bin/sh
# Builds commands of the k8s.io/kubernetes module (its staging modules
# pinned to the matching v0.x) into DIR: kubelet for `make kubelet-test`,
# the control plane, kube-proxy, kubectl and kubeadm for `make cluster`.
#
#   hack/build-kubernetes.sh DIR [command...]     (default: kubelet)
#
# A command whose binary is in DIR already, built from the same version
# (DIR/.<command>.version), is not built again. kubelet alone takes ~8
# minutes the first time; every command ~20.
set -eu
version=${KUBERNETES_VERSION:-v1.37.2}
staging=$(echo "$version" | sed 's/^v1\./v0./')
dir=${1:-$(pwd)/bin}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- kubelet
mkdir -p "$dir"
todo=
for c in "$@"; do
	if [ ! -x "$dir/$c" ] || [ "$(cat "$dir/.$c.version" 2>/dev/null)" != "$version" ]; then
		todo="$todo $c"
	fi
done
[ -n "$todo" ] || exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
{
	echo "module kubebuild"
	echo
	echo "go 1.26.8"
	echo
	echo "require k8s.io/kubernetes $version"
	echo
	echo "replace ("
	for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
		cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
		cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt \
		kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
		mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming; do
		echo "	k8s.io/$m => k8s.io/$m $staging"
	done
	echo ")"
} > go.mod
{
	printf '//go:build tools\n\npackage kubebuild\n\nimport (\n'
	for c in $todo; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
	printf ')\n'
} > tools.go
GOFLAGS=-mod=mod go mod tidy
for c in $todo; do
	GOFLAGS=-mod=mod go build -o "$dir/$c" "k8s.io/kubernetes/cmd/$c"
	echo "$version" > "$dir/.$c.version"
	echo "built $dir/$c ($version)"
done
