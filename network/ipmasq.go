package network

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// cleanupBridgeMasq removes the masquerade rules the bridge plugin's ipMasq
// (iptables backend, the default) added for a container, for a DEL that runs
// without the network namespace. bridge finds those rules from the addresses
// still on eth0 inside the namespace; with no namespace it skips them and
// the POSTROUTING rule and the per-container CNI-… chain stay forever (the
// iptables backend has no GC). Its names are reproduced here: chain
// "CNI-" + sha512(network name + container id) cut to 28 characters, comment
// `name: "<network>" id: "<container id>"`.
func cleanupBridgeMasq(ctx context.Context, list *libcni.NetworkConfigList, containerID string) error {
	masq := false
	for _, p := range list.Plugins {
		if p.Network.Type != "bridge" {
			continue
		}
		var c struct {
			IPMasq  bool    `json:"ipMasq"`
			Backend *string `json:"ipMasqBackend"`
		}
		if json.Unmarshal(p.Bytes, &c) == nil && c.IPMasq && (c.Backend == nil || *c.Backend == "iptables") {
			masq = true
		}
	}
	if !masq {
		return nil
	}
	chain := fmt.Sprintf("CNI-%x", sha512.Sum512([]byte(list.Name+containerID)))[:28]
	comment := fmt.Sprintf("name: %q id: %q", list.Name, containerID)
	var errs []error
	for _, bin := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(bin); err != nil {
			continue // nothing can have been added without it
		}
		if err := removeMasqChain(ctx, bin, chain, comment); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeMasqChain(ctx context.Context, bin, chain, comment string) error {
	ipt := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, bin, append([]string{"-w", "-t", "nat"}, args...)...).CombinedOutput()
		return string(out), err
	}
	if _, err := ipt("-S", chain); err != nil {
		return nil // no such chain: the usual case
	}
	rules, err := ipt("-S", "POSTROUTING")
	if err != nil {
		return fmt.Errorf("%s -S POSTROUTING: %v: %s", bin, err, strings.TrimSpace(rules))
	}
	// Rules look like: -A POSTROUTING -s 10.88.0.5/32 -m comment --comment "..." -j CNI-…
	for _, line := range strings.Split(rules, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[len(f)-2] != "-j" || f[len(f)-1] != chain {
			continue
		}
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "-s" {
				_, _ = ipt("-D", "POSTROUTING", "-s", f[i+1], "-j", chain, "-m", "comment", "--comment", comment)
			}
		}
	}
	_, _ = ipt("-F", chain)
	if out, err := ipt("-X", chain); err != nil {
		return fmt.Errorf("removing %s nat chain %s of a pod whose network namespace is gone: %v: %s", bin, chain, err, strings.TrimSpace(out))
	}
	return nil
}
