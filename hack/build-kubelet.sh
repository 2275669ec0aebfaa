#!/bin/sh
# Builds kubelet from the k8s.io/kubernetes module (its staging modules
# pinned to the matching v0.x) into DIR (default: bin/), for
# `make kubelet-test`. Takes ~8 minutes the first time.
set -eu
version=${KUBERNETES_VERSION:-v1.37.2}
staging=$(echo "$version" | sed 's/^v1\./v0./')
dir=${1:-$(pwd)/bin}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
{
	echo "module kubeletbuild"
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
printf '//go:build tools\n\npackage kubeletbuild\n\nimport _ "k8s.io/kubernetes/cmd/kubelet"\n' > tools.go
GOFLAGS=-mod=mod go mod tidy
mkdir -p "$dir"
GOFLAGS=-mod=mod go build -o "$dir/kubelet" k8s.io/kubernetes/cmd/kubelet
echo "built $dir/kubelet ($version)"
