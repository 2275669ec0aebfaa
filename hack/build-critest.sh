#!/bin/sh
# Builds critest, cri-tools' CRI validation suite (a Go test binary), into
# DIR (default: bin/), for `make critest`.
set -eu
version=${CRI_TOOLS_VERSION:-v1.37.0}
dir=${1:-$(pwd)/bin}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
printf 'module critestbuild\n\ngo 1.26.8\n' > go.mod
GOFLAGS=-mod=mod go get "sigs.k8s.io/cri-tools@$version"
GOFLAGS=-mod=mod go test -c -o "$dir/critest" sigs.k8s.io/cri-tools/cmd/critest
echo "built $dir/critest (cri-tools $version)"
