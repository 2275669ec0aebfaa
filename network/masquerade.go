package network

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/coreos/go-iptables/iptables"
)

// MasqueradeKey is a top-level conflist key husk reads and CNI ignores:
// `"huskMasquerade": true` has husk masquerade the traffic leaving the
// network's IPAM subnets with one set of rules for the whole network, made
// when the config is loaded, the way Docker, netavark and flannel do it.
// The bridge plugin's ipMasq does the same per pod, with a chain and four
// iptables runs on every ADD and more on every DEL: on iptables-nft that
// was a third of RunPodSandbox. The default network uses it with ipMasq off.
const MasqueradeKey = "huskMasquerade"

// masquerade is the rules one network asks for.
type masquerade struct {
	network string
	chain   string
	subnets []*net.IPNet
}

// masqFamily is what differs between IPv4 and IPv6 rules.
type masqFamily struct {
	proto     iptables.Protocol
	multicast string // never masqueraded, as bridge's ipMasq leaves it
}

var masqFamilies = []masqFamily{
	{iptables.ProtocolIPv4, "224.0.0.0/4"},
	{iptables.ProtocolIPv6, "ff00::/8"},
}

func (q *masquerade) subnetsOf(f masqFamily) []*net.IPNet {
	var out []*net.IPNet
	for _, n := range q.subnets {
		if (n.IP.To4() != nil) == (f.proto == iptables.ProtocolIPv4) {
			out = append(out, n)
		}
	}
	return out
}

// parseMasquerade returns nil when the config does not ask for it.
func parseMasquerade(list *libcni.NetworkConfigList) (*masquerade, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(list.Bytes, &top); err != nil {
		return nil, fmt.Errorf("error parsing configuration list: %w", err)
	}
	raw, ok := top[MasqueradeKey]
	if !ok {
		return nil, nil
	}
	var on bool
	if err := json.Unmarshal(raw, &on); err != nil {
		return nil, fmt.Errorf("%q must be true or false, not %s", MasqueradeKey, raw)
	}
	if !on {
		return nil, nil
	}
	q := &masquerade{network: list.Name}
	seen := map[string]bool{}
	for _, p := range list.Plugins {
		var c struct {
			IPAM struct {
				Subnet string `json:"subnet"`
				Ranges [][]struct {
					Subnet string `json:"subnet"`
				} `json:"ranges"`
			} `json:"ipam"`
		}
		if err := json.Unmarshal(p.Bytes, &c); err != nil {
			return nil, fmt.Errorf("plugin %q: %w", p.Network.Type, err)
		}
		subnets := []string{c.IPAM.Subnet}
		for _, set := range c.IPAM.Ranges {
			for _, r := range set {
				subnets = append(subnets, r.Subnet)
			}
		}
		for _, s := range subnets {
			if s == "" {
				continue
			}
			_, n, err := net.ParseCIDR(s)
			if err != nil {
				return nil, fmt.Errorf("plugin %q: ipam subnet %q: %w", p.Network.Type, s, err)
			}
			if !seen[n.String()] {
				seen[n.String()] = true
				q.subnets = append(q.subnets, n)
			}
		}
	}
	if len(q.subnets) == 0 {
		return nil, fmt.Errorf("%q is set but no plugin's ipam has a subnet (host-local \"ranges\" or \"subnet\") to masquerade", MasqueradeKey)
	}
	slices.SortFunc(q.subnets, func(a, b *net.IPNet) int { return strings.Compare(a.String(), b.String()) })
	// Named by the network and its subnets, so that daemons with different
	// networks on one host never share (and never remove) each other's.
	var key strings.Builder
	key.WriteString(list.Name)
	for _, n := range q.subnets {
		key.WriteString("\x00" + n.String())
	}
	q.chain = fmt.Sprintf("HUSK-MASQ-%x", sha256.Sum256([]byte(key.String())))[:22]
	return q, nil
}

func (q *masquerade) comment() string {
	return fmt.Sprintf("husk network %q", q.network)
}

// jump is the POSTROUTING rule that sends one subnet's traffic to the chain.
func (q *masquerade) jump(n *net.IPNet) []string {
	return []string{"-s", n.String(), "-m", "comment", "--comment", q.comment(), "-j", q.chain}
}

// apply makes the rules exist, touching nothing that is already right, so a
// daemon restart does not open a gap in the NAT of running pods.
func (q *masquerade) apply() error {
	return q.eachFamily(false, func(f masqFamily, subnets []*net.IPNet, ipt *iptables.IPTables) error {
		want := []string{"-N " + q.chain}
		for _, n := range subnets {
			want = append(want, fmt.Sprintf("-A %s -d %s -j RETURN", q.chain, n))
		}
		want = append(want, fmt.Sprintf("-A %s ! -d %s -j MASQUERADE", q.chain, f.multicast))
		if have, err := ipt.List("nat", q.chain); err != nil || !slices.Equal(have, want) {
			if err := ipt.ClearChain("nat", q.chain); err != nil {
				return err
			}
			for _, rule := range want[1:] {
				if err := ipt.Append("nat", q.chain, strings.Fields(rule)[2:]...); err != nil {
					return err
				}
			}
		}
		for _, n := range subnets {
			if err := ipt.AppendUnique("nat", "POSTROUTING", q.jump(n)...); err != nil {
				return err
			}
		}
		return nil
	})
}

// remove takes away what apply made; what is already gone is no error.
func (q *masquerade) remove() error {
	return q.eachFamily(true, func(_ masqFamily, subnets []*net.IPNet, ipt *iptables.IPTables) error {
		// A jump to a chain that does not exist cannot exist either.
		if ok, err := ipt.ChainExists("nat", q.chain); err != nil || !ok {
			return err
		}
		for _, n := range subnets {
			if err := ipt.DeleteIfExists("nat", "POSTROUTING", q.jump(n)...); err != nil {
				return err
			}
		}
		return ipt.ClearAndDeleteChain("nat", q.chain)
	})
}

// eachFamily runs fn for IPv4 and IPv6, where the network has subnets of
// the family. Without that family's iptables, skipping says whether to go
// on (removing: nothing of it can have been made) or fail (applying).
func (q *masquerade) eachFamily(skipMissing bool, fn func(masqFamily, []*net.IPNet, *iptables.IPTables) error) error {
	for _, f := range masqFamilies {
		subnets := q.subnetsOf(f)
		if len(subnets) == 0 {
			continue
		}
		ipt, err := iptables.New(iptables.IPFamily(f.proto), iptables.Timeout(10))
		if err != nil {
			if skipMissing {
				continue
			}
			return err
		}
		if err := fn(f, subnets, ipt); err != nil {
			return err
		}
	}
	return nil
}

// RemoveMasquerade removes the rules a conflist's MasqueradeKey made. The
// daemon leaves them in place when it stops, since running pods keep using
// them; this is for whoever removes the network for good (and for tests).
func RemoveMasquerade(conflist []byte) error {
	list, err := libcni.NetworkConfFromBytes(conflist)
	if err != nil {
		return err
	}
	q, err := parseMasquerade(list)
	if err != nil || q == nil {
		return err
	}
	return q.remove()
}
