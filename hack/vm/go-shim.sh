#!/bin/sh
# Stands in for the go command inside the test guest, which has no Go
# toolchain. The test binaries' TestMains build what they drive
# (test/e2e: `go build -o DIR/ .../cmd/husk .../cmd/husk-runtime`, slowcni;
# hack/install-cni-plugins.sh, which test/e2e and network call:
# `go list -m -f '{{.Version}}' MODULE` and `go build -o FILE MODULE/PATH`):
# hack/vm/test.sh built all of them on the host into $HUSK_VM_PREBUILT, and
# this copies them where they were asked for. Anything else fails loudly.
set -eu
prebuilt=${HUSK_VM_PREBUILT:-/opt/husk/prebuilt}
die() {
	echo "go (hack/vm/go-shim.sh): $*" >&2
	exit 2
}
[ $# -ge 1 ] || die "no command"
cmd=$1
shift
case $cmd in
env)
	[ "$*" = GOPATH ] || die "go env $*: only GOPATH is known"
	echo /opt/husk/gopath
	;;
list)
	# go list -m -f '{{.Version}}' MODULE
	if [ $# != 4 ] || [ "$1" != -m ] || [ "$2" != -f ] || [ "$3" != '{{.Version}}' ]; then
		die "go list $*: only -m -f '{{.Version}}' MODULE is known"
	fi
	v=$(awk -v m="$4" '$1 == m { print $2 }' "$prebuilt/modules")
	[ -n "$v" ] || die "module $4 is not in $prebuilt/modules"
	echo "$v"
	;;
build)
	out=
	pkgs=
	while [ $# -gt 0 ]; do
		case $1 in
		-o) out=$2; shift ;;
		-ldflags | -tags | -gcflags | -mod) shift ;;
		-*) ;;
		*) pkgs="$pkgs $1" ;;
		esac
		shift
	done
	if [ -z "$out" ] || [ -z "$pkgs" ]; then
		die "go build: want -o OUT and packages"
	fi
	for pkg in $pkgs; do
		name=${pkg##*/}
		[ -x "$prebuilt/$name" ] || die "go build $pkg: no prebuilt $prebuilt/$name"
		case $out in
		*/) dest=$out$name ;;
		*) if [ -d "$out" ]; then dest=$out/$name; else dest=$out; fi ;;
		esac
		cp "$prebuilt/$name" "$dest"
	done
	;;
*)
	die "go $cmd: not available in the guest"
	;;
esac
