#!/bin/bash
# `make vm-test`: builds husk, the CNI plugins, crictl and the test binaries
# of the packages that touch cgroups, namespaces and mounts on the host, and
# runs them as root in the Debian 12 guest (systemd PID 1, cgroup v2 only)
# that hack/vm/run.sh boots. Their go test -v output streams to stdout; a
# summary per suite follows.
#
#   hack/vm/test.sh [SUITE...]      (default: all, in the order below)
#
# Suites: cgroups (oci/runtime/cgroups), linux (oci/runtime/linux), ns
# (network/ns), network, sandbox, e2e-cgroupfs and e2e-systemd (test/e2e
# with HUSK_E2E_CGROUP_DRIVER set), critest (cri-tools' suite, its AppArmor
# specs too, against husk with the systemd driver: test/e2e's TestCritest),
# critest-crun (the same under the crun runtime handler: TestCritestCrunHandler), kubelet (a real kubelet, cgroupDriver systemd and failCgroupV1, running
# static pods on husk: TestKubeletRunsAStaticPod; building kubelet the first
# time takes some 8 minutes, hack/build-kubernetes.sh). Not in all: cluster
# (test/e2e's TestCluster, the one-node cluster of `make cluster-test` with
# kubelet's systemd cgroup driver; hack/build-cluster.sh builds its
# binaries, some 25 minutes the first time, and the guest gets 6G of memory
# unless HUSK_VM_MEM says otherwise).
#
# Environment: HUSK_VM_OUT (default bin/vm): the share, which keeps the
# builds and results/<suite>.log; HUSK_VM_RUN: a -test.run pattern for every
# suite; HUSK_VM_E2E_TIMEOUT (default 60m): go test's -test.timeout for each
# e2e suite; HUSK_VM_TIMEOUT etc.: see run.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
out=${HUSK_VM_OUT:-$root/bin/vm}
all="cgroups linux ns network sandbox e2e-cgroupfs e2e-systemd critest critest-crun kubelet"
suites=${*:-$all}

pkg_of() {
	case $1 in
	cgroups) echo ./oci/runtime/cgroups ;;
	linux) echo ./oci/runtime/linux ;;
	ns) echo ./network/ns ;;
	network) echo ./network ;;
	sandbox) echo ./sandbox ;;
	e2e-cgroupfs | e2e-systemd | critest | critest-crun | kubelet | cluster) echo ./test/e2e ;;
	*) echo "test.sh: unknown suite $1 (want some of: $all cluster)" >&2; return 1 ;;
	esac
}
for s in $suites; do pkg_of "$s" >/dev/null; done

t0=$(date +%s)
echo "== host: building husk, the CNI plugins, crictl and the test binaries into $out" >&2
rm -rf "$out/kube"
mkdir -p "$out/prebuilt" "$out/bin" "$out/tests" "$out/src/hack" "$out/kube"
make --no-print-directory build >&2
cp bin/husk bin/husk-runtime "$out/prebuilt/"
go build -o "$out/prebuilt/slowcni" ./test/e2e/slowcni
sh hack/install-cni-plugins.sh "$out/prebuilt" >&2
go list -m -f '{{.Path}} {{.Version}}' all 2>/dev/null | awk 'NF == 2' >"$out/prebuilt/modules"
cp "$here/go-shim.sh" "$out/prebuilt/go"
if [ ! -x "$out/bin/crictl" ]; then
	# The version `make test` installs (Makefile).
	GOBIN="$out/bin" GOFLAGS='' go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0
fi
# The test binaries run from their package's directory in a copy of the
# tree's layout (TestMains call ../../hack/install-cni-plugins.sh).
cp go.mod "$out/src/"
cp hack/install-cni-plugins.sh "$out/src/hack/"
# CRIU too (test/e2e's TestMain calls ../../hack/install-criu.sh ../../bin,
# which finds it built and builds nothing in the guest).
sh hack/install-criu.sh bin >&2
mkdir -p "$out/src/bin"
cp hack/install-criu.sh "$out/src/hack/"
cp bin/criu "$out/src/bin/"
built=
for s in $suites; do
	pkg=$(pkg_of "$s")
	name=${pkg##*/}
	tags=
	if [ "$s" = critest ] || [ "$s" = critest-crun ]; then
		name=e2e-critest tags=critest
		make --no-print-directory bin/critest >&2
		cp bin/critest "$out/bin/"
	fi
	if [ "$s" = kubelet ]; then
		name=e2e-kubelet tags=kubelet
		sh hack/build-kubernetes.sh "$root/bin" kubelet >&2
		cp bin/kubelet "$out/bin/"
	fi
	if [ "$s" = cluster ]; then
		name=e2e-cluster tags=cluster
		sh hack/build-cluster.sh "$root/bin" >&2
		for b in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl kubeadm etcd coredns; do
			cp "bin/$b" "$out/kube/"
		done
		# TestCluster builds its grpc probe server with `go build`.
		CGO_ENABLED=0 go build -o "$out/prebuilt/grpchealth" ./test/e2e/grpchealth
		: "${HUSK_VM_MEM:=6G}"
		export HUSK_VM_MEM
	fi
	mkdir -p "$out/src/$pkg"
	case " $built " in *" $name "*) continue ;; esac
	go test -c ${tags:+-tags $tags} -o "$out/tests/$name.test" "$pkg"
	built="$built $name"
done
t1=$(date +%s)
echo "== host: built in $((t1 - t0))s" >&2

rm -rf "$out/results"
mkdir -p "$out/results"
printf '%s\n' "$suites" >"$out/suites"
printf '%s\n' "${HUSK_VM_RUN:-}" >"$out/run-pattern"
printf '%s\n' "${HUSK_VM_E2E_TIMEOUT:-60m}" >"$out/e2e-timeout"

guest=$(mktemp "${TMPDIR:-/tmp}/husk-vm-guest-XXXXXX.sh")
trap 'rm -f "$guest"' EXIT
cat >"$guest" <<'GUEST'
# Runs in the guest as root, from /husk (the share).
set -u
echo "== guest: $(uname -r), PID 1 $(cat /proc/1/comm), cgroup $(stat -fc %T /sys/fs/cgroup), controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "== guest: apparmor $(cat /sys/module/apparmor/parameters/enabled 2>/dev/null), $(nproc) CPUs, $(awk '/MemTotal/ { print $2 / 1024 " MiB" }' /proc/meminfo)"
# Off the 9p share: binaries run from the guest's own disk.
rm -rf /opt/husk
mkdir -p /opt/husk
cp -a /husk/prebuilt /husk/bin /husk/tests /husk/src /husk/kube /opt/husk/
export PATH=/opt/husk/prebuilt:/opt/husk/bin:$PATH HUSK_VM_PREBUILT=/opt/husk/prebuilt
pattern=$(cat /husk/run-pattern)
e2e_timeout=$(cat /husk/e2e-timeout)
failed=0
for suite in $(cat /husk/suites); do
	case $suite in
	cgroups) pkg=oci/runtime/cgroups ;;
	linux) pkg=oci/runtime/linux ;;
	ns) pkg=network/ns ;;
	network) pkg=network ;;
	sandbox) pkg=sandbox ;;
	e2e-* | critest* | kubelet | cluster) pkg=test/e2e ;;
	esac
	driver=
	timeout=20m
	bin=${pkg##*/}
	run=$pattern
	skip=
	case $suite in
	e2e-cgroupfs)
		driver=cgroupfs timeout=$e2e_timeout
		# What does not touch the cgroup driver runs once in the guest,
		# in e2e-systemd (and on the host): the long hostile-input and
		# image tests.
		skip='^(TestExecOutputDoesNotGrowTheDaemon|TestListStaysWithinWhatAKubeletTakes|TestEveryRPCWithHostileFields|TestCrictl.*|TestImage.*|TestPull.*)$'
		;;
	e2e-systemd) driver=systemd timeout=$e2e_timeout ;;
	critest) driver=systemd timeout=$e2e_timeout bin=e2e-critest run=${pattern:-^TestCritest$} ;;
	# crun (1.8) under the systemd driver, as kubeadm's nodes run; e2e-cgroupfs
	# runs it under cgroupfs (TestCrunRuntimeHandler).
	critest-crun) driver=systemd timeout=$e2e_timeout bin=e2e-critest run=${pattern:-^TestCritestCrunHandler$} ;;
	kubelet) driver=systemd timeout=$e2e_timeout bin=e2e-kubelet run=${pattern:-^TestKubeletRunsAStaticPod$} ;;
	cluster)
		driver=systemd timeout=$e2e_timeout bin=e2e-cluster run=${pattern:-^TestCluster$}
		# kube-proxy's Services between pods of one bridge need it.
		modprobe br_netfilter
		;;
	esac
	echo "== guest: suite $suite (./$pkg${driver:+, cgroup driver $driver}) $(date -u +%T)"
	start=$(date +%s)
	(
		cd "/opt/husk/src/$pkg" &&
			HUSK_E2E_CGROUP_DRIVER=$driver HUSK_BIN=/opt/husk/prebuilt/husk \
				HUSK_E2E_LOG=/husk/results/$suite.husk.log CRITEST=/opt/husk/bin/critest KUBELET=/opt/husk/bin/kubelet KUBE_BIN=/opt/husk/kube \
				exec "/opt/husk/tests/$bin.test" -test.v -test.count=1 -test.timeout "$timeout" ${run:+-test.run "$run"} ${skip:+-test.skip "$skip"}
	) >"/husk/results/$suite.log" 2>&1 &
	pid=$!
	tail -n +1 -f --pid=$pid "/husk/results/$suite.log" &
	tailpid=$!
	rc=0
	wait "$pid" || rc=$?
	wait "$tailpid" 2>/dev/null
	echo "$rc $(($(date +%s) - start))" >"/husk/results/$suite.rc"
	echo "== guest: suite $suite exit $rc after $(($(date +%s) - start))s"
	[ "$rc" = 0 ] || failed=$((failed + 1))
done
exit "$failed"
GUEST

rc=0
# All suites take some 50 minutes under TCG here: room for a slower machine.
"$here/run.sh" -s "$out" -t "${HUSK_VM_TIMEOUT:-6000}" "$guest" || rc=$?
t2=$(date +%s)

echo
echo "== summary (host build $((t1 - t0))s, guest $((t2 - t1))s; logs in $out/results)"
for s in $suites; do
	log=$out/results/$s.log
	if [ ! -f "$out/results/$s.rc" ]; then
		echo "$s: did not run to the end"
		continue
	fi
	read -r src secs <"$out/results/$s.rc"
	awk -v suite="$s" -v rc="$src" -v secs="$secs" '
		/^--- PASS/ { p++ } /^--- FAIL/ { f++; failed = failed "\n    " $3 } /^--- SKIP/ { k++ }
		/^ +--- PASS/ { sp++ } /^ +--- FAIL/ { sf++ } /^ +--- SKIP/ { sk++ }
		/^panic: / && !pan { pan = $0 }
		END {
			printf "%s: exit %s in %ss: tests %d passed, %d failed, %d skipped; subtests %d passed, %d failed, %d skipped%s\n",
				suite, rc, secs, p, f, k, sp, sf, sk, (pan ? "\n    " pan : "")
			if (failed) printf "  failed:%s\n", failed
		}' "$log"
done
# One closing line for every suite together, as test runners end.
for s in $suites; do
	[ -f "$out/results/$s.log" ] && cat "$out/results/$s.log"
done | awk '
	/^ *--- PASS/ { p++ } /^ *--- FAIL/ { f++ } /^ *--- SKIP/ { k++ }
	END { printf "vm-test: %d passed, %d failed, %d skipped\n", p, f, k }'
exit "$rc"
