package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// pluginDir holds the CNI plugins TestMain built; empty when not root.
var pluginDir string

// The main goroutine keeps the main thread, as in the daemon (cmd/husk):
// Setup brings lo up on a thread left in the pod's namespace and thrown
// away, and Go cannot throw away the main thread; parked there, it would
// keep the namespace (and the pod's veth) alive.
func init() { runtime.LockOSThread() }

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "husk-cni-bin-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer func() { _ = os.RemoveAll(dir) }()
			out, err := exec.Command("../hack/install-cni-plugins.sh", dir).CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "building CNI plugins: %v\n%s", err, out)
				return 1
			}
			pluginDir = dir
		}
		return m.Run()
	}())
}

func needRoot(t testing.TB) {
	t.Helper()
	if pluginDir == "" {
		t.Skip("needs root: creates network namespaces, bridges and iptables rules")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatal("iptables is not installed (apt-get install iptables); portmap and ipMasq need it")
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testNet is one network of a test: its own bridge, subnet, network name,
// config dir, cache dir and host-local data dir, so tests never touch the
// host's /var/lib/cni or husk0 and can run beside anything else.
type testNet struct {
	name     string // network name and bridge name
	subnet   netip.Prefix
	confDir  string
	cacheDir string
	dataDir  string
	binDirs  []string

	mu      sync.Mutex
	bridges []string
}

func newTestNet(t testing.TB) *testNet {
	t.Helper()
	needRoot(t)
	n := &testNet{
		name:     "hk" + randHex(4),
		subnet:   freeSubnet(t),
		confDir:  t.TempDir(),
		cacheDir: t.TempDir(),
		dataDir:  t.TempDir(),
		binDirs:  []string{pluginDir},
	}
	t.Cleanup(func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, b := range n.bridges {
			if l, err := netlink.LinkByName(b); err == nil {
				_ = netlink.LinkDel(l)
			}
		}
	})
	return n
}

func (n *testNet) config() Config {
	return Config{ConfDir: n.confDir, BinDirs: n.binDirs, CacheDir: n.cacheDir}
}

func (n *testNet) manager(t testing.TB) *Manager {
	t.Helper()
	m, err := New(n.config())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// netOpts describes a conflist: bridge + host-local, portmap, bandwidth,
// then any extra plugins.
type netOpts struct {
	name       string // default n.name
	bridge     string // default n.name
	subnet     netip.Prefix
	rangeStart string
	rangeEnd   string
	extra      []map[string]any
	// masquerade has husk masquerade the network (MasqueradeKey) instead
	// of bridge's ipMasq per pod.
	masquerade bool
}

func (n *testNet) writeConf(t testing.TB, file string, o netOpts) string {
	t.Helper()
	if o.name == "" {
		o.name = n.name
	}
	if o.bridge == "" {
		o.bridge = n.name
	}
	if !o.subnet.IsValid() {
		o.subnet = n.subnet
	}
	n.mu.Lock()
	n.bridges = append(n.bridges, o.bridge)
	n.mu.Unlock()
	rng := map[string]any{"subnet": o.subnet.String()}
	if o.rangeStart != "" {
		rng["rangeStart"], rng["rangeEnd"] = o.rangeStart, o.rangeEnd
	}
	plugins := []map[string]any{
		{
			"type": "bridge", "bridge": o.bridge, "isGateway": true, "ipMasq": !o.masquerade, "hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]any{{rng}},
				"routes":  []map[string]any{{"dst": "0.0.0.0/0"}},
				"dataDir": n.dataDir,
			},
		},
		{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
	}
	plugins = append(plugins, o.extra...)
	conf := map[string]any{"cniVersion": "1.0.0", "name": o.name, "plugins": plugins}
	if o.masquerade {
		conf[MasqueradeKey] = true
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(n.confDir, file)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if o.masquerade {
		// The daemon leaves a network's rules when it stops; the test
		// takes them away.
		t.Cleanup(func() {
			if err := RemoveMasquerade(b); err != nil {
				t.Errorf("removing the masquerade rules: %v", err)
			}
		})
	}
	return path
}

var subnets struct {
	sync.Mutex
	next int
	used map[int]bool
}

// freeSubnet picks a 10.99.x.0/24 that no host route covers and no other
// test of this process took.
func freeSubnet(t testing.TB) netip.Prefix {
	t.Helper()
	subnets.Lock()
	defer subnets.Unlock()
	if subnets.used == nil {
		subnets.used = map[int]bool{}
		b := make([]byte, 1)
		_, _ = rand.Read(b)
		subnets.next = int(b[0])
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		t.Fatal(err)
	}
	for range 256 {
		x := subnets.next % 256
		subnets.next++
		if subnets.used[x] {
			continue
		}
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 99, byte(x), 0}), 24)
		taken := false
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
			ones, _ := r.Dst.Mask.Size()
			if ones > 0 && netip.PrefixFrom(a, ones).Overlaps(p) {
				taken = true
			}
		}
		if !taken {
			subnets.used[x] = true
			return p
		}
	}
	t.Fatal("no free 10.99.x.0/24")
	return netip.Prefix{}
}

// newNetNS pins a new network namespace on a file under t.TempDir().
func newNetNS(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		return unix.Mount(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()), path, "", unix.MS_BIND, "")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(path, unix.MNT_DETACH) })
	return path
}

// inNS runs fn on a thread inside the namespace; sockets it opens stay
// there.
func inNS(path string, fn func() error) error {
	return onThread(func() error {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer func() { _ = unix.Close(fd) }()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns %s: %w", path, err)
		}
		return fn()
	})
}

// onThread runs fn on a locked thread and puts the thread back in its
// network namespace afterwards. Just exiting locked is not enough: on the
// main thread Go parks the thread instead of ending it, and the namespace
// it is in then lives as long as the process.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return // stays locked: never reused
		}
		defer func() { _ = unix.Close(orig) }()
		err = fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func (n *testNet) newPod(t testing.TB) Pod {
	id := randHex(32)
	return Pod{ID: id, NetNS: newNetNS(t), Name: "pod-" + id[:6], Namespace: "ns-" + id[6:10], UID: randHex(16)}
}

// serveIn listens on TCP port inside the pod and answers every connection
// with greeting.
func serveIn(t *testing.T, pod Pod, port int, greeting string) {
	t.Helper()
	var l net.Listener
	if err := inNS(pod.NetNS, func() (err error) {
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	answer(t, l, func(net.Conn) string { return greeting })
}

// answer serves l until the test ends: each connection gets the line say
// gives for it.
func answer(t *testing.T, l net.Listener, say func(net.Conn) string) {
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = fmt.Fprintln(c, say(c))
			_ = c.Close()
		}
	}()
}

// readGreeting connects to addr (from the pod's namespace, or the host's
// when fromNS is "") and returns the first line it gets.
func readGreeting(fromNS, addr string) (string, error) {
	dial := func() (string, error) {
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		if err != nil {
			return "", err
		}
		defer func() { _ = c.Close() }()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line), err
	}
	if fromNS == "" {
		return dial()
	}
	var line string
	err := inNS(fromNS, func() (err error) {
		line, err = dial()
		return err
	})
	return line, err
}

// leases are host-local's allocations in the network's data dir.
func (n *testNet) leases(t *testing.T, network string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(n.dataDir, network))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.Name() == "lock" || strings.HasPrefix(e.Name(), "last_reserved_ip") {
			continue
		}
		out = append(out, e.Name())
	}
	return out
}

// bridgePorts counts the veths attached to a bridge (0 if it does not exist).
func bridgePorts(t *testing.T, bridge string) int {
	t.Helper()
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return 0
	}
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			count++
		}
	}
	return count
}

// hostVeth is the host side of the only pod on a bridge.
func hostVeth(t *testing.T, bridge string) netlink.Link {
	t.Helper()
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index && l.Type() == "veth" {
			return l
		}
	}
	t.Fatalf("no veth on bridge %s", bridge)
	return nil
}

func ifbName(network, id string) string {
	return fmt.Sprintf("bwp%x", sha512.Sum512([]byte(network+id)))[:15]
}

// iptablesMentioning returns the iptables/ip6tables rules and chains that
// mention any of the words.
func iptablesMentioning(t *testing.T, words ...string) []string {
	t.Helper()
	var found []string
	for _, bin := range []string{"iptables-save", "ip6tables-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			continue
		}
		out, err := exec.Command(bin).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", bin, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, w := range words {
				if strings.Contains(line, w) {
					found = append(found, bin+": "+line)
					break
				}
			}
		}
	}
	return found
}

// masqChain is the bridge plugin's per-container nat chain.
func masqChain(network, id string) string {
	return fmt.Sprintf("CNI-%x", sha512.Sum512([]byte(network+id)))[:28]
}

// assertGone checks that nothing of the pod's attachment to network is
// left: no interface but lo in its namespace (if the namespace still
// exists; the host end of a veth dies with the pod end), no lease, no
// iptables rule or chain, no ifb device, no cache or pending record.
func (n *testNet) assertGone(t *testing.T, pod Pod, network string) {
	t.Helper()
	if isNetNS(pod.NetNS) {
		var names []string
		if err := inNS(pod.NetNS, func() error {
			links, err := retryDump(netlink.LinkList)
			for _, l := range links {
				names = append(names, l.Attrs().Name)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(names) != 1 || names[0] != "lo" {
			t.Errorf("pod namespace still has links %v", names)
		}
	}
	for _, l := range n.leases(t, network) {
		b, _ := os.ReadFile(filepath.Join(n.dataDir, network, l))
		if strings.Contains(string(b), pod.ID) {
			t.Errorf("lease %s of the pod left in %s", l, n.dataDir)
		}
	}
	if rules := iptablesMentioning(t, pod.ID, masqChain(network, pod.ID)); len(rules) > 0 {
		t.Errorf("iptables rules left:\n%s", strings.Join(rules, "\n"))
	}
	if _, err := netlink.LinkByName(ifbName(network, pod.ID)); err == nil {
		t.Errorf("ifb device %s left", ifbName(network, pod.ID))
	}
	for _, dir := range []string{"results", "husk-pending"} {
		entries, _ := os.ReadDir(filepath.Join(n.cacheDir, dir))
		for _, e := range entries {
			if strings.Contains(e.Name(), pod.ID) {
				t.Errorf("cache file %s/%s left", dir, e.Name())
			}
		}
	}
}

func setup(t *testing.T, m *Manager, pod Pod) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := m.Setup(ctx, pod)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	// Idempotent, so harmless after the test's own teardown; keeps a failed
	// test from leaving rules on the machine.
	t.Cleanup(func() { _ = m.Teardown(context.Background(), Pod{ID: pod.ID, NetNS: pod.NetNS}) })
	return res
}

// trySetup is for Setups expected to fail; if one does not, or leaves
// something behind, the pod is still torn down at the end of the test.
func trySetup(t *testing.T, m *Manager, pod Pod) (*Result, error) {
	t.Helper()
	t.Cleanup(func() { _ = m.Teardown(context.Background(), Pod{ID: pod.ID, NetNS: pod.NetNS}) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return m.Setup(ctx, pod)
}

// fakePlugin installs a shell CNI plugin that records each command's
// CNI_ARGS and stdin in logDir, fails ADD, and fails the first DEL too when
// failDelOnce.
func fakePlugin(t *testing.T, name string, failDelOnce bool) (binDir, logDir string) {
	t.Helper()
	binDir, logDir = t.TempDir(), t.TempDir()
	delOnce := ":"
	if failDelOnce {
		delOnce = `[ -e "$log/DEL.failed" ] || { touch "$log/DEL.failed"; echo '{"cniVersion":"1.0.0","code":999,"msg":"` + name + ` DEL refuses once"}'; exit 1; }`
	}
	script := fmt.Sprintf(`#!/bin/sh
log=%s
cat > "$log/$CNI_COMMAND.stdin"
echo "$CNI_ARGS" > "$log/$CNI_COMMAND.args"
case "$CNI_COMMAND" in
ADD) echo '{"cniVersion":"1.0.0","code":999,"msg":"%s refuses"}'; exit 1 ;;
DEL) %s ;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}' ;;
esac
exit 0
`, logDir, name, delOnce)
	if err := os.WriteFile(filepath.Join(binDir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return binDir, logDir
}

func teardown(t *testing.T, m *Manager, pod Pod) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Teardown(ctx, pod); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
}

// retryDump repeats a netlink dump that other tests' changes to links and
// routes interrupted (netlink.ErrDumpInterrupted: the result may be
// inconsistent).
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var (
		out []T
		err error
	)
	for range 20 {
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
		time.Sleep(5 * time.Millisecond)
	}
	return out, err
}
