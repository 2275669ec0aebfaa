package network

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// fakeBinDir has executables named like the plugins; Status only looks for
// them.
func fakeBinDir(t *testing.T, names ...string) string {
	dir := t.TempDir()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestStatus(t *testing.T) {
	confDir := t.TempDir()
	binDir := fakeBinDir(t, "bridge", "host-local", "portmap")
	m, err := New(Config{ConfDir: confDir, BinDirs: []string{binDir}, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	status := func() string {
		t.Helper()
		ready, reason, msg := m.Status()
		if ready {
			return ""
		}
		if reason != NotReadyReason || msg == "" {
			t.Fatalf("not ready with reason %q message %q", reason, msg)
		}
		return msg
	}

	if msg := status(); !strings.Contains(msg, "no network config found in "+confDir) {
		t.Errorf("empty dir: %q", msg)
	}
	if wrote, err := WriteDefaultConfig(confDir); err != nil || !wrote {
		t.Fatalf("WriteDefaultConfig: %v, %v", wrote, err)
	}
	// bandwidth is missing; loopback is not needed (husk brings lo up).
	if msg := status(); !strings.Contains(msg, `CNI plugin "bandwidth" (network "husk") not found in `+binDir) {
		t.Errorf("missing bandwidth: %q", msg)
	}
	if err := os.WriteFile(filepath.Join(binDir, "bandwidth"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if msg := status(); msg != "" {
		t.Errorf("not ready with every plugin present: %q", msg)
	}
	if got := m.NetworkName(); got != "husk" {
		t.Errorf("NetworkName = %q", got)
	}

	// An earlier file, broken, takes over; the message names it.
	broken := filepath.Join(confDir, "00-broken.conf")
	if err := os.WriteFile(broken, []byte(`{"name": "x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg := status(); !strings.Contains(msg, broken) || !strings.Contains(msg, "missing 'type'") {
		t.Errorf("broken file: %q", msg)
	}
	if m.NetworkName() != "" {
		t.Errorf("NetworkName with a broken config: %q", m.NetworkName())
	}
	// A single-plugin config is a list of one.
	if err := os.WriteFile(broken, []byte(`{"cniVersion":"1.0.0","name":"single","type":"portmap"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg := status(); msg != "" || m.NetworkName() != "single" {
		t.Errorf("single-plugin config: %q, name %q", msg, m.NetworkName())
	}
}

// Plugins libcni reads from <confDir>/<network>/*.conf are part of the
// network, and are inlined so that the cached config is complete.
func TestPluginsFromNetworkDir(t *testing.T) {
	confDir := t.TempDir()
	m, err := New(Config{ConfDir: confDir, BinDirs: []string{fakeBinDir(t, "bridge", "portmap")}, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-n.conflist"),
		[]byte(`{"cniVersion":"1.1.0","name":"n","plugins":[{"type":"bridge"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := m.network()
	if err != nil || len(list.Plugins) != 1 {
		t.Fatalf("%v, %v", list, err)
	}
	if err := os.Mkdir(filepath.Join(confDir, "n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "n", "20-portmap.conf"), []byte(`{"type":"portmap"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	list, err = m.network()
	if err != nil || len(list.Plugins) != 2 {
		t.Fatalf("after adding a plugin file: %v, %v", list, err)
	}
	cached, err := libcni.NetworkConfFromBytes(list.Bytes)
	if err != nil || len(cached.Plugins) != 2 || cached.Plugins[1].Network.Type != "portmap" {
		t.Fatalf("Bytes are not self-contained: %s (%v)", list.Bytes, err)
	}
}

func TestWriteDefaultConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d") // created
	wrote, err := WriteDefaultConfig(dir)
	if err != nil || !wrote {
		t.Fatalf("first: %v, %v", wrote, err)
	}
	path := filepath.Join(dir, DefaultConfName)
	list, err := libcni.NetworkConfFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
	}
	if list.Name != "husk" || strings.Join(types, ",") != "bridge,portmap,bandwidth" {
		t.Errorf("default config: name %q, plugins %v", list.Name, types)
	}
	for _, want := range []string{`"bridge": "husk0"`, `"isGateway": true`, `"ipMasq": false`, `"huskMasquerade": true`, `"hairpinMode": true`,
		`"subnet": "10.88.0.0/16"`, `"dst": "0.0.0.0/0"`, `"portMappings": true`, `"bandwidth": true`} {
		if !strings.Contains(string(list.Bytes), want) {
			t.Errorf("default config lacks %s", want)
		}
	}

	if err := os.WriteFile(path, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if wrote, err := WriteDefaultConfig(dir); err != nil || wrote {
		t.Fatalf("second: %v, %v", wrote, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "mine" {
		t.Error("existing file overwritten")
	}

	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "87-podman.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if wrote, err := WriteDefaultConfig(other); err != nil || wrote {
		t.Fatalf("dir with a .json: %v, %v", wrote, err)
	}
	entries, _ := os.ReadDir(other)
	if len(entries) != 1 {
		t.Errorf("files in a configured dir: %v", entries)
	}
}

func TestInvalidSandboxID(t *testing.T) {
	m, err := New(Config{ConfDir: t.TempDir(), BinDirs: []string{t.TempDir()}, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, id := range []string{"", "../../etc", "a/b"} {
		if _, err := m.Setup(ctx, Pod{ID: id, NetNS: "/proc/self/ns/net"}); err == nil {
			t.Errorf("Setup accepted id %q", id)
		}
		if err := m.Teardown(ctx, Pod{ID: id}); err == nil {
			t.Errorf("Teardown accepted id %q", id)
		}
		if err := m.Check(ctx, Pod{ID: id}); err == nil {
			t.Errorf("Check accepted id %q", id)
		}
	}
}

func TestPodResult(t *testing.T) {
	zero, one := 0, 1
	res := &types100.Result{
		CNIVersion: "1.0.0",
		Interfaces: []*types100.Interface{
			{Name: "vethabc"},                       // host side
			{Name: "eth0", Sandbox: "/run/netns/x"}, // the pod's
		},
		IPs: []*types100.IPConfig{
			{Interface: &zero, Address: mustCIDR(t, "10.0.0.1/24")},
			{Interface: &one, Address: mustCIDR(t, "fd00::5/64")},
			{Interface: &one, Address: mustCIDR(t, "10.0.0.5/24")},
		},
	}
	got, err := podResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if got.Interface != "eth0" || len(got.IPs) != 2 || got.IPs[0].String() != "10.0.0.5" || got.IPs[1].String() != "fd00::5" {
		t.Errorf("got %+v", got)
	}
	if _, err := podResult(&types100.Result{CNIVersion: "1.0.0"}); err == nil {
		t.Error("a result without addresses was accepted")
	}
}

func mustCIDR(t *testing.T, s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return *n
}
