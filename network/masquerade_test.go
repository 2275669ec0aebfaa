package network

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// outside is a network namespace standing for a host beyond this one: a
// veth to the host with its own subnet and no route back to any pod
// subnet, so a pod's packet gets an answer only if it left masqueraded as
// the host. Its server answers with the address it saw the client at.
func outside(t *testing.T) (serverAddr string, hostIP netip.Addr) {
	t.Helper()
	subnet := freeSubnet(t)
	hostIP = subnet.Addr().Next()
	outIP := hostIP.Next()
	ns := newNetNS(t)
	hostEnd := "hko" + randHex(4)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostEnd}, PeerName: "hkp" + randHex(4)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(veth) })
	peer, err := netlink.LinkByName(veth.PeerName)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if err := netlink.LinkSetNsFd(peer, int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	addr := func(a netip.Addr) *netlink.Addr {
		return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(subnet.Bits(), 32)}}
	}
	if err := netlink.AddrAdd(veth, addr(hostIP)); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		t.Fatal(err)
	}
	var l net.Listener
	if err := inNS(ns, func() error {
		p, err := netlink.LinkByName(veth.PeerName)
		if err != nil {
			return err
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		for _, link := range []netlink.Link{p, lo} {
			if err := netlink.LinkSetUp(link); err != nil {
				return err
			}
		}
		if err := netlink.AddrAdd(p, addr(outIP)); err != nil {
			return err
		}
		l, err = net.Listen("tcp4", net.JoinHostPort(outIP.String(), "8080"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	answer(t, l, func(c net.Conn) string {
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		return host
	})
	return l.Addr().String(), hostIP
}

func postroutingJumps(t *testing.T, chain string) []string {
	var jumps []string
	for _, r := range iptablesMentioning(t, "-j "+chain) {
		if strings.Contains(r, "-A POSTROUTING") {
			jumps = append(jumps, r)
		}
	}
	return jumps
}

// With MasqueradeKey the network is masqueraded by one chain made when the
// config is loaded: pods get out as the host, no per-pod chain is made, and
// the rules go when a config without the key replaces it.
func TestMasqueradeOncePerNetwork(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	conf := n.writeConf(t, "10-test.conflist", netOpts{masquerade: true})
	m := n.manager(t)
	if ready, reason, msg := m.Status(); !ready {
		t.Fatalf("not ready: %s: %s", reason, msg)
	}
	m.mu.Lock()
	chain := m.cur.masq.chain
	m.mu.Unlock()
	if got := postroutingJumps(t, chain); len(got) != 1 || !strings.Contains(got[0], "-s "+n.subnet.String()) {
		t.Fatalf("POSTROUTING jumps to %s: %q, want one for %s", chain, got, n.subnet)
	}
	rules := iptablesMentioning(t, "-A "+chain+" ")
	if len(rules) != 2 || !strings.Contains(rules[0], "-d "+n.subnet.String()+" -j RETURN") || !strings.Contains(rules[1], "! -d 224.0.0.0/4 -j MASQUERADE") {
		t.Fatalf("chain %s: %q", chain, rules)
	}

	server, hostIP := outside(t)
	a, b := n.newPod(t), n.newPod(t)
	setup(t, m, a)
	setup(t, m, b)
	for _, p := range []Pod{a, b} {
		if got, err := readGreeting(p.NetNS, server); err != nil || got != hostIP.String() {
			t.Fatalf("pod -> %s outside: seen as %q, %v; want the host's %s", server, got, err, hostIP)
		}
		if r := iptablesMentioning(t, masqChain(n.name, p.ID)); len(r) > 0 {
			t.Errorf("a per-pod chain was made: %q", r)
		}
	}
	if got := postroutingJumps(t, chain); len(got) != 1 {
		t.Errorf("after two pods, POSTROUTING jumps to %s: %q", chain, got)
	}
	teardown(t, m, a)
	teardown(t, m, b)
	n.assertGone(t, a, n.name)
	n.assertGone(t, b, n.name)
	if got := postroutingJumps(t, chain); len(got) != 1 {
		t.Errorf("the network's rules went with its pods: %q", got)
	}

	// A second manager on the same config (a restarted daemon) finds the
	// rules right and leaves them as they are.
	m2 := n.manager(t)
	if ready, reason, msg := m2.Status(); !ready {
		t.Fatalf("not ready: %s: %s", reason, msg)
	}
	if got := postroutingJumps(t, chain); len(got) != 1 {
		t.Errorf("after a second load: %q", got)
	}

	// A broken edit leaves the running pods' NAT alone.
	if err := os.WriteFile(conf, []byte(`{"cniVersion": "1.0.0", "name": `), 0o644); err != nil {
		t.Fatal(err)
	}
	if ready, _, _ := m.Status(); ready {
		t.Fatal("ready with a broken config")
	}
	if got := postroutingJumps(t, chain); len(got) != 1 {
		t.Errorf("a broken config took the network's rules: %q", got)
	}

	if n.writeConf(t, "10-test.conflist", netOpts{}) != conf {
		t.Fatal("wrote another file")
	}
	if ready, reason, msg := m.Status(); !ready {
		t.Fatalf("not ready after the change: %s: %s", reason, msg)
	}
	if got := iptablesMentioning(t, chain); len(got) > 0 {
		t.Errorf("rules left after the config stopped asking for them: %q", got)
	}
}

func TestBadMasqueradeConfig(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	for name, conf := range map[string]string{
		"not a bool": fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,%q:"yes","plugins":[{"type":"bridge","bridge":%q,
			"ipam":{"type":"host-local","subnet":%q}}]}`, n.name, MasqueradeKey, n.name, n.subnet),
		"no subnet": fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,%q:true,"plugins":[{"type":"bridge","bridge":%q,
			"ipam":{"type":"dhcp"}}]}`, n.name, MasqueradeKey, n.name),
		"bad subnet": fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,%q:true,"plugins":[{"type":"bridge","bridge":%q,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.2.3"}]]}}]}`, n.name, MasqueradeKey, n.name),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "10-bad.conflist"), []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := n.config()
			cfg.ConfDir = dir
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ready, _, msg := m.Status()
			if ready || !strings.Contains(msg, "10-bad.conflist") {
				t.Fatalf("ready %v, message %q: want not ready, naming the file", ready, msg)
			}
			if name != "bad subnet" && !strings.Contains(msg, MasqueradeKey) {
				t.Errorf("message %q does not name %s", msg, MasqueradeKey)
			}
			if got := iptablesMentioning(t, n.subnet.String()); len(got) > 0 {
				t.Errorf("rules made for a bad config: %q", got)
			}
		})
	}
}
