package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestTwoPodsReachEachOther(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	n.writeConf(t, "10-test.conflist", netOpts{})
	m := n.manager(t)
	if ready, reason, msg := m.Status(); !ready {
		t.Fatalf("not ready: %s: %s", reason, msg)
	}
	if got := m.NetworkName(); got != n.name {
		t.Fatalf("NetworkName = %q, want %q", got, n.name)
	}

	a, b := n.newPod(t), n.newPod(t)
	ra := setup(t, m, a)
	rb := setup(t, m, b)
	if ra.Interface != "eth0" || len(ra.IPs) != 1 || len(rb.IPs) != 1 {
		t.Fatalf("results: %+v %+v", ra, rb)
	}
	ipA, _ := netip.AddrFromSlice(ra.IPs[0])
	ipB, _ := netip.AddrFromSlice(rb.IPs[0])
	if !n.subnet.Contains(ipA) || !n.subnet.Contains(ipB) || ipA == ipB {
		t.Fatalf("pod IPs %v and %v: want two distinct addresses in %v", ipA, ipB, n.subnet)
	}
	if got := len(n.leases(t, n.name)); got != 2 {
		t.Fatalf("%d leases, want 2", got)
	}
	if got := bridgePorts(t, n.name); got != 2 {
		t.Fatalf("%d veths on the bridge, want 2", got)
	}

	serveIn(t, a, 8080, "hello from a")
	serveIn(t, b, 8080, "hello from b")
	if got, err := readGreeting(b.NetNS, net.JoinHostPort(ipA.String(), "8080")); err != nil || got != "hello from a" {
		t.Fatalf("b -> a: %q, %v", got, err)
	}
	if got, err := readGreeting(a.NetNS, net.JoinHostPort(ipB.String(), "8080")); err != nil || got != "hello from b" {
		t.Fatalf("a -> b: %q, %v", got, err)
	}
	// lo is up: Setup brought it up.
	if got, err := readGreeting(a.NetNS, "127.0.0.1:8080"); err != nil || got != "hello from a" {
		t.Fatalf("a -> 127.0.0.1: %q, %v", got, err)
	}

	ctx := context.Background()
	if err := m.Check(ctx, a); err != nil {
		t.Errorf("Check: %v", err)
	}
	if err := m.Check(ctx, Pod{ID: randHex(32), NetNS: a.NetNS}); !errors.Is(err, ErrNotAttached) {
		t.Errorf("Check of an unknown sandbox: %v, want ErrNotAttached", err)
	}

	teardown(t, m, a)
	teardown(t, m, b)
	n.assertGone(t, a, n.name)
	n.assertGone(t, b, n.name)
	if got := len(n.leases(t, n.name)); got != 0 {
		t.Errorf("%d leases after teardown", got)
	}
	if got := bridgePorts(t, n.name); got != 0 {
		t.Errorf("%d veths on the bridge after teardown", got)
	}
	// Idempotent.
	teardown(t, m, a)
	teardown(t, m, Pod{ID: randHex(32)})
}

func TestPortMapping(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	n.writeConf(t, "10-test.conflist", netOpts{})
	m := n.manager(t)

	pod := n.newPod(t)
	hostPort := freePort(t)
	pod.PortMappings = []PortMapping{
		{Protocol: "TCP", ContainerPort: 8080, HostPort: int32(hostPort)},
		{Protocol: "tcp", ContainerPort: 9090}, // no host port: ignored
	}
	setup(t, m, pod)
	serveIn(t, pod, 8080, "mapped")

	gw := n.subnet.Addr().Next() // the bridge's address
	for _, host := range []string{gw.String(), "127.0.0.1"} {
		addr := net.JoinHostPort(host, fmt.Sprint(hostPort))
		if got, err := readGreeting("", addr); err != nil || got != "mapped" {
			t.Errorf("host -> %s: %q, %v", addr, got, err)
		}
	}
	if rules := iptablesMentioning(t, pod.ID); len(rules) == 0 {
		t.Error("no iptables rule mentions the sandbox")
	}

	teardown(t, m, pod)
	n.assertGone(t, pod, n.name)
	if _, err := readGreeting("", net.JoinHostPort(gw.String(), fmt.Sprint(hostPort))); err == nil {
		t.Error("host port still forwarded after teardown")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

func TestBandwidth(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	n.writeConf(t, "10-test.conflist", netOpts{})
	m := n.manager(t)

	bw, err := BandwidthFromAnnotations(map[string]string{
		IngressBandwidthAnnotation: "10M",
		EgressBandwidthAnnotation:  "20M",
	})
	if err != nil {
		t.Fatal(err)
	}
	pod := n.newPod(t)
	pod.Bandwidth = bw
	setup(t, m, pod)

	// Ingress (to the pod) is shaped on the host end of the veth, egress
	// on an ifb device the host end's ingress is redirected to.
	tbfRate := func(l netlink.Link) uint64 {
		qs, err := retryDump(func() ([]netlink.Qdisc, error) { return netlink.QdiscList(l) })
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range qs {
			if tbf, ok := q.(*netlink.Tbf); ok {
				return tbf.Rate
			}
		}
		return 0
	}
	veth := hostVeth(t, n.name)
	if got := tbfRate(veth); got != 10_000_000/8 {
		t.Errorf("tbf rate on %s = %d bytes/s, want %d", veth.Attrs().Name, got, 10_000_000/8)
	}
	ifb, err := netlink.LinkByName(ifbName(n.name, pod.ID))
	if err != nil {
		t.Fatalf("ifb device: %v", err)
	}
	if got := tbfRate(ifb); got != 20_000_000/8 {
		t.Errorf("tbf rate on %s = %d bytes/s, want %d", ifb.Attrs().Name, got, 20_000_000/8)
	}

	teardown(t, m, pod)
	n.assertGone(t, pod, n.name)
}

// A restarted daemon tears down with what was cached at ADD, even when the
// config is gone: port mappings and bandwidth come from the cache too.
func TestTeardownAfterRestartWithoutConfig(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	conf := n.writeConf(t, "10-test.conflist", netOpts{})
	m := n.manager(t)
	pod := n.newPod(t)
	pod.PortMappings = []PortMapping{{ContainerPort: 80, HostPort: int32(freePort(t))}}
	pod.Bandwidth = &Bandwidth{IngressRate: 1e6, IngressBurst: 1e6, EgressRate: 1e6, EgressBurst: 1e6}
	setup(t, m, pod)

	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
	m2 := n.manager(t)
	if ready, _, msg := m2.Status(); ready || !strings.Contains(msg, n.confDir) {
		t.Errorf("Status without config: ready=%v %q", ready, msg)
	}
	// As kubelet does after a restart: only the id and the namespace.
	teardown(t, m2, Pod{ID: pod.ID, NetNS: pod.NetNS})
	n.assertGone(t, pod, n.name)
	teardown(t, m2, Pod{ID: pod.ID, NetNS: pod.NetNS})
}

// The namespace is gone (a reboot, or removed before teardown): DEL runs
// without it and still frees the lease and the NAT rules.
func TestTeardownWithoutNetNS(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	n.writeConf(t, "10-test.conflist", netOpts{})
	m := n.manager(t)
	pod := n.newPod(t)
	setup(t, m, pod)
	if rules := iptablesMentioning(t, masqChain(n.name, pod.ID)); len(rules) == 0 {
		t.Fatal("bridge added no masquerade chain")
	}

	// The pin file stays but is no longer a namespace, as after a reboot.
	if err := unix.Unmount(pod.NetNS, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the veth to die with the namespace", func() bool { return bridgePorts(t, n.name) == 0 })

	teardown(t, n.manager(t), pod)
	n.assertGone(t, pod, n.name)
	if got := len(n.leases(t, n.name)); got != 0 {
		t.Errorf("%d leases after teardown", got)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBrokenConfig(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	// The lexically first file is the network, even when a later one is fine.
	broken := filepath.Join(n.confDir, "05-broken.conflist")
	if err := os.WriteFile(broken, []byte(`{"cniVersion": "1.0.0", "name": "x", "plugins": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	n.writeConf(t, "10-good.conflist", netOpts{})
	m := n.manager(t)
	ready, reason, msg := m.Status()
	if ready || reason != "NetworkPluginNotReady" || !strings.Contains(msg, broken) {
		t.Fatalf("Status = %v, %q, %q; want not ready naming %s", ready, reason, msg, broken)
	}
	if m.NetworkName() != "" {
		t.Errorf("NetworkName = %q with a broken config", m.NetworkName())
	}
	pod := n.newPod(t)
	_, err := trySetup(t, m, pod)
	if err == nil || !strings.Contains(err.Error(), broken) {
		t.Fatalf("Setup: %v; want an error naming %s", err, broken)
	}
	n.assertGone(t, pod, n.name)

	// Fixing the file makes the node ready without a restart.
	if err := os.Remove(broken); err != nil {
		t.Fatal(err)
	}
	if ready, _, msg := m.Status(); !ready {
		t.Fatalf("still not ready after removing the broken file: %s", msg)
	}
}

func TestMissingPlugin(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	n.writeConf(t, "10-test.conflist", netOpts{extra: []map[string]any{{"type": "hk-no-such-plugin"}}})
	m := n.manager(t)
	if ready, _, msg := m.Status(); ready || !strings.Contains(msg, `"hk-no-such-plugin"`) || !strings.Contains(msg, pluginDir) {
		t.Fatalf("Status = %v, %q; want not ready naming the plugin and the bin dir", ready, msg)
	}
	pod := n.newPod(t)
	if _, err := trySetup(t, m, pod); err == nil || !strings.Contains(err.Error(), "hk-no-such-plugin") {
		t.Fatalf("Setup: %v", err)
	}
	n.assertGone(t, pod, n.name)
	if got := bridgePorts(t, n.name); got != 0 {
		t.Errorf("%d veths on the bridge", got)
	}
}

// A plugin after bridge fails: the veth, the lease and the NAT rules bridge
// made are undone, and the plugin got the CNI_ARGS and runtimeConfig.
func TestFailingPluginLeavesNothing(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	failDir, logDir := fakePlugin(t, "hkfail", false)
	n.binDirs = append(n.binDirs, failDir)
	n.writeConf(t, "10-test.conflist", netOpts{extra: []map[string]any{
		{"type": "hkfail", "capabilities": map[string]bool{"portMappings": true}},
	}})
	m := n.manager(t)
	if ready, _, msg := m.Status(); !ready {
		t.Fatal(msg)
	}

	pod := n.newPod(t)
	pod.PortMappings = []PortMapping{{Protocol: "udp", ContainerPort: 53, HostPort: int32(freePort(t)), HostIP: "127.0.0.1"}}
	_, err := trySetup(t, m, pod)
	t.Logf("error as seen by the caller: %v", err)
	if err == nil || !strings.Contains(err.Error(), `type="hkfail"`) || !strings.Contains(err.Error(), "hkfail refuses") {
		t.Fatalf("Setup: %v; want the plugin's error naming it", err)
	}
	n.assertGone(t, pod, n.name)
	if got := len(n.leases(t, n.name)); got != 0 {
		t.Errorf("%d leases left", got)
	}
	if got := bridgePorts(t, n.name); got != 0 {
		t.Errorf("%d veths left on the bridge", got)
	}

	args, _ := os.ReadFile(filepath.Join(logDir, "ADD.args"))
	want := fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s",
		pod.Namespace, pod.Name, pod.ID, pod.UID)
	if strings.TrimSpace(string(args)) != want {
		t.Errorf("CNI_ARGS = %q, want %q", args, want)
	}
	stdin, _ := os.ReadFile(filepath.Join(logDir, "ADD.stdin"))
	if !strings.Contains(string(stdin), `"runtimeConfig":{"portMappings":[{"hostPort":`) || !strings.Contains(string(stdin), `"protocol":"udp","hostIP":"127.0.0.1"`) {
		t.Errorf("plugin config lacks the port mappings: %s", stdin)
	}
	if _, err := os.Stat(filepath.Join(logDir, "DEL.args")); err != nil {
		t.Errorf("DEL was not run after the failed ADD: %v", err)
	}
}

// When undoing a failed ADD fails too (or the daemon dies during ADD), libcni
// has cached nothing; the pending record lets a later Teardown, from a new
// Manager, still clean up.
func TestFailedUndoRetriedByTeardown(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	failDir, _ := fakePlugin(t, "hkfail", true)
	n.binDirs = append(n.binDirs, failDir)
	n.writeConf(t, "10-test.conflist", netOpts{extra: []map[string]any{{"type": "hkfail"}}})
	m := n.manager(t)
	pod := n.newPod(t)
	pod.PortMappings = []PortMapping{{ContainerPort: 80, HostPort: int32(freePort(t))}}
	_, err := trySetup(t, m, pod)
	if err == nil || !strings.Contains(err.Error(), "hkfail refuses") || !strings.Contains(err.Error(), "hkfail DEL refuses once") {
		t.Fatalf("Setup: %v", err)
	}
	if len(n.leases(t, n.name)) != 1 || len(iptablesMentioning(t, pod.ID)) == 0 {
		t.Fatal("expected the failed undo to leave the lease and rules for teardown")
	}
	teardown(t, n.manager(t), Pod{ID: pod.ID, NetNS: pod.NetNS})
	n.assertGone(t, pod, n.name)
	if got := len(n.leases(t, n.name)); got != 0 {
		t.Errorf("%d leases left", got)
	}
}

func TestExhaustedRange(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	only := n.subnet.Addr().Next().Next().String() // .2
	n.writeConf(t, "10-test.conflist", netOpts{rangeStart: only, rangeEnd: only})
	m := n.manager(t)

	first := n.newPod(t)
	if res := setup(t, m, first); res.IPs[0].String() != only {
		t.Fatalf("first pod got %v, want %s", res.IPs, only)
	}
	second := n.newPod(t)
	_, err := trySetup(t, m, second)
	if err == nil || !strings.Contains(err.Error(), `type="bridge"`) {
		t.Fatalf("Setup with no free address: %v", err)
	}
	t.Logf("error as seen by the caller: %v", err)
	n.assertGone(t, second, n.name)
	if got := n.leases(t, n.name); len(got) != 1 || got[0] != only {
		t.Errorf("leases %v, want only the first pod's", got)
	}
	if got := bridgePorts(t, n.name); got != 1 {
		t.Errorf("%d veths on the bridge, want the first pod's only", got)
	}

	teardown(t, m, first)
	n.assertGone(t, first, n.name)
}

// A changed config applies to the next pod; existing pods are torn down with
// the config they were set up with.
func TestHotReload(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	conf := n.writeConf(t, "10-test.conflist", netOpts{})
	m := n.manager(t)
	first := n.newPod(t)
	r1 := setup(t, m, first)

	other := freeSubnet(t)
	otherName := "hk" + randHex(4)
	if n.writeConf(t, "10-test.conflist", netOpts{name: otherName, bridge: otherName, subnet: other}) != conf {
		t.Fatal("wrote another file")
	}
	if got := m.NetworkName(); got != otherName {
		t.Fatalf("NetworkName after the change = %q, want %q", got, otherName)
	}
	second := n.newPod(t)
	r2 := setup(t, m, second)
	ip1, _ := netip.AddrFromSlice(r1.IPs[0])
	ip2, _ := netip.AddrFromSlice(r2.IPs[0])
	if !n.subnet.Contains(ip1) || !other.Contains(ip2) {
		t.Fatalf("IPs %v, %v; want one in %v and one in %v", ip1, ip2, n.subnet, other)
	}
	if bridgePorts(t, n.name) != 1 || bridgePorts(t, otherName) != 1 {
		t.Fatalf("veths: %d on %s, %d on %s", bridgePorts(t, n.name), n.name, bridgePorts(t, otherName), otherName)
	}

	teardown(t, m, first)
	teardown(t, m, second)
	n.assertGone(t, first, n.name)
	n.assertGone(t, second, otherName)
	if len(n.leases(t, n.name))+len(n.leases(t, otherName)) != 0 {
		t.Error("leases left")
	}
}

// A .conf file holds a single plugin; it is used as a list of one.
func TestSinglePluginConf(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	conf := fmt.Sprintf(`{"cniVersion":"0.4.0","name":%q,"type":"bridge","bridge":%q,"isGateway":true,
		"ipam":{"type":"host-local","subnet":%q,"dataDir":%q}}`, n.name, n.name, n.subnet, n.dataDir)
	n.bridges = append(n.bridges, n.name)
	if err := os.WriteFile(filepath.Join(n.confDir, "99-single.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m := n.manager(t)
	pod := n.newPod(t)
	res := setup(t, m, pod)
	if ip, _ := netip.AddrFromSlice(res.IPs[0]); !n.subnet.Contains(ip) {
		t.Fatalf("IP %v not in %v", ip, n.subnet)
	}
	if err := m.Check(context.Background(), pod); err != nil {
		t.Errorf("Check: %v", err)
	}
	teardown(t, m, pod)
	n.assertGone(t, pod, n.name)
}

// A pod whose metadata no plugin can be started with (a NUL, a name past
// what an environment variable holds: pods made before metadata was
// validated) fails ADD, and its DEL must still succeed: it would otherwise
// stay for good, with its namespaces, address and veth.
func TestPodWithArgsNoPluginTakesIsStillTornDown(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	n.writeConf(t, "10-test.conflist", netOpts{})
	m := n.manager(t)
	for name, podName := range map[string]string{"nul": "bad\x00name", "1MiB": strings.Repeat("n", 1<<20)} {
		t.Run(name, func(t *testing.T) {
			pod := n.newPod(t)
			pod.Name = podName
			if _, err := trySetup(t, m, pod); err == nil {
				t.Fatal("ADD with such a name succeeded")
			}
			teardown(t, m, pod)
			n.assertGone(t, pod, n.name)
		})
	}
	if got := len(n.leases(t, n.name)); got != 0 {
		t.Errorf("%d leases after teardown", got)
	}
}
