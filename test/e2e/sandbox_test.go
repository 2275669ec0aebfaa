package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/network"
	"github.com/husk-runtime/husk/network/ns"
)

// podNet is a pod network of the test's own: a bridge and a /24 no other
// test or daemon uses, with its IP leases kept in the test's directory.
type podNet struct {
	name, bridge, subnet, gateway, dataDir string
}

func newPodNet(t testing.TB, d *daemon) *podNet {
	a, b := 100+rand.IntN(100), rand.IntN(256)
	n := &podNet{
		name:    "e2e",
		bridge:  fmt.Sprintf("hke%d", rand.IntN(1_000_000)),
		subnet:  fmt.Sprintf("10.%d.%d.0/24", a, b),
		gateway: fmt.Sprintf("10.%d.%d.1", a, b),
		dataDir: filepath.Join(d.dir, "cni-data"),
	}
	t.Cleanup(func() {
		// The bridge and the network's masquerade rules are what
		// CNI DEL and the daemon's exit leave in place.
		_ = exec.Command("ip", "link", "del", n.bridge).Run()
		if err := network.RemoveMasquerade([]byte(n.conflist())); err != nil {
			t.Errorf("removing the masquerade rules of the test network: %v", err)
		}
	})
	return n
}

// conflist is the network as a CNI config, the default one's plugins
// (network.WriteDefaultConfig) with extra plugins appended.
func (n *podNet) conflist(extra ...string) string {
	plugins := []string{fmt.Sprintf(`{"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":false,"hairpinMode":true,
		"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}]}}`, n.bridge, n.dataDir, n.subnet),
		`{"type":"portmap","capabilities":{"portMappings":true}}`,
		`{"type":"bandwidth","capabilities":{"bandwidth":true}}`,
	}
	plugins = append(plugins, extra...)
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,%q:true,"plugins":[%s]}`, n.name, network.MasqueradeKey, strings.Join(plugins, ","))
}

func (n *podNet) install(t testing.TB, d *daemon, extra ...string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(d.cniConfDir(), "10-e2e.conflist"), []byte(n.conflist(extra...)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newPodDaemon is a daemon with a working pod network.
func newPodDaemon(t testing.TB, extraArgs ...string) (*daemon, *podNet) {
	d := newDaemon(t, "", extraArgs...)
	n := newPodNet(t, d)
	n.install(t, d)
	return d, n
}

func podConfig(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "e2e", Uid: name + "-uid"},
		Hostname: name,
		Labels:   map[string]string{"app": name},
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
}

func runPod(t testing.TB, d *daemon, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	resp, err := d.runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v", cfg.GetMetadata().GetName(), err)
	}
	return resp.PodSandboxId
}

func stopPod(t testing.TB, d *daemon, id string) {
	t.Helper()
	if _, err := d.runtime.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
}

func removePod(t testing.TB, d *daemon, id string) {
	t.Helper()
	if _, err := d.runtime.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
}

type podInfo struct {
	Namespaces map[string]string `json:"namespaces"`
	CgroupPath string            `json:"cgroupPath"`
	Init       *struct {
		PID int `json:"pid"`
	} `json:"init"`
}

func podStatus(t testing.TB, d *daemon, id string) (*runtimeapi.PodSandboxStatus, podInfo) {
	t.Helper()
	resp, err := d.runtime.PodSandboxStatus(context.Background(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatalf("PodSandboxStatus: %v", err)
	}
	var info podInfo
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil {
		t.Fatalf("verbose info: %v", err)
	}
	return resp.Status, info
}

// inNetNS runs fn on a thread inside the network namespace at path.
func inNetNS(t testing.TB, path string, fn func() error) {
	t.Helper()
	if err := ns.Do(map[ns.Type]string{ns.Net: path}, fn); err != nil {
		t.Fatal(err)
	}
}

// listenIn opens a TCP listener inside a pod's network namespace that
// answers every connection with reply.
func listenIn(t testing.TB, netns, addr, reply string) net.Listener {
	t.Helper()
	var l net.Listener
	inNetNS(t, netns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(reply))
			_ = c.Close()
		}
	}()
	return l
}

func readFrom(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 64)
	n, err := c.Read(b)
	return string(b[:n]), err
}

func TestPodsReachEachOtherByIP(t *testing.T) {
	d, _ := newPodDaemon(t)
	a := runPod(t, d, podConfig("pod-a"))
	b := runPod(t, d, podConfig("pod-b"))
	sa, ia := podStatus(t, d, a)
	sb, ib := podStatus(t, d, b)
	if sa.GetNetwork().GetIp() == "" || sb.GetNetwork().GetIp() == "" || sa.Network.Ip == sb.Network.Ip {
		t.Fatalf("pod IPs %q and %q", sa.GetNetwork().GetIp(), sb.GetNetwork().GetIp())
	}
	listenIn(t, ib.Namespaces["net"], ":8080", "hello from b")
	var got string
	inNetNS(t, ia.Namespaces["net"], func() error {
		var err error
		got, err = readFrom(net.JoinHostPort(sb.Network.Ip, "8080"))
		return err
	})
	if got != "hello from b" {
		t.Errorf("pod a read %q from pod b", got)
	}
	// And the host reaches the pod.
	if got, err := readFrom(net.JoinHostPort(sb.Network.Ip, "8080")); err != nil || got != "hello from b" {
		t.Errorf("host read %q, %v from pod b", got, err)
	}
}

func TestHostPortReachesPod(t *testing.T) {
	d, n := newPodDaemon(t)
	hostPort := 30000 + rand.IntN(2000)
	cfg := podConfig("web")
	cfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8080, HostPort: int32(hostPort)}}
	id := runPod(t, d, cfg)
	_, info := podStatus(t, d, id)
	listenIn(t, info.Namespaces["net"], ":8080", "hostport works")
	got, err := readFrom(net.JoinHostPort(n.gateway, fmt.Sprint(hostPort)))
	if err != nil || got != "hostport works" {
		t.Fatalf("host port %d: %q, %v", hostPort, got, err)
	}
	stopPod(t, d, id)
	if out, _ := exec.Command("iptables-save").Output(); strings.Contains(string(out), id[:12]) || strings.Contains(string(out), fmt.Sprintf("--dport %d", hostPort)) {
		t.Errorf("iptables rules of the pod left after stop")
	}
}

func TestPodFilesFromConfig(t *testing.T) {
	d, _ := newPodDaemon(t)
	cfg := podConfig("files")
	cfg.Hostname = "my-host"
	cfg.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"e2e.svc.cluster.local", "svc.cluster.local"}, Options: []string{"ndots:5"}}
	id := runPod(t, d, cfg)
	st, info := podStatus(t, d, id)
	resolv, err := os.ReadFile(filepath.Join(d.root, "pods", id, "resolv.conf"))
	if err != nil {
		t.Fatal(err)
	}
	want := "search e2e.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
	if string(resolv) != want {
		t.Errorf("resolv.conf = %q, want %q", resolv, want)
	}
	hosts, _ := os.ReadFile(filepath.Join(d.root, "pods", id, "hosts"))
	if !strings.Contains(string(hosts), st.Network.Ip+"\tmy-host") || !strings.Contains(string(hosts), "127.0.0.1\tlocalhost") {
		t.Errorf("hosts:\n%s", hosts)
	}
	var hostname string
	if err := ns.Do(map[ns.Type]string{ns.UTS: info.Namespaces["uts"]}, func() error {
		var u syscall.Utsname
		if err := syscall.Uname(&u); err != nil {
			return err
		}
		var b []byte
		for _, c := range u.Nodename {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		hostname = string(b)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if hostname != "my-host" {
		t.Errorf("hostname in the pod's UTS namespace = %q", hostname)
	}
	// /dev/shm is a tmpfs of the pod's.
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(filepath.Join(d.state, "pods", id, "shm"), &sfs); err != nil || sfs.Type != 0x01021994 {
		t.Errorf("pod /dev/shm is not a tmpfs: %v", err)
	}
}

func TestHostNetworkPodUsesTheHostsNamespaces(t *testing.T) {
	d, _ := newPodDaemon(t)
	cfg := podConfig("hostnet")
	cfg.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE}
	id := runPod(t, d, cfg)
	st, info := podStatus(t, d, id)
	if len(info.Namespaces) != 0 || st.GetNetwork().GetIp() != "" {
		t.Errorf("host-network pod has namespaces %v, ip %q", info.Namespaces, st.GetNetwork().GetIp())
	}
	if st.GetLinux().GetNamespaces().GetOptions().GetNetwork() != runtimeapi.NamespaceMode_NODE {
		t.Errorf("status does not say NODE network")
	}
	h, _ := os.Hostname()
	b, _ := os.ReadFile(filepath.Join(d.root, "pods", id, "hostname"))
	if strings.TrimSpace(string(b)) != h {
		t.Errorf("hostname file %q, host %q", b, h)
	}
}

func TestSysctls(t *testing.T) {
	d, _ := newPodDaemon(t)
	cfg := podConfig("sysctl")
	cfg.Linux.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "81", "kernel.shmmni": "2048"}
	id := runPod(t, d, cfg)
	_, info := podStatus(t, d, id)
	var netVal, ipcVal []byte
	if err := ns.Do(map[ns.Type]string{ns.Net: info.Namespaces["net"], ns.IPC: info.Namespaces["ipc"]}, func() error {
		var err error
		if netVal, err = os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err != nil {
			return err
		}
		ipcVal, err = os.ReadFile("/proc/sys/kernel/shmmni")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(netVal)) != "81" || strings.TrimSpace(string(ipcVal)) != "2048" {
		t.Errorf("in the pod: ip_unprivileged_port_start=%s shmmni=%s", netVal, ipcVal)
	}
	host, _ := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if strings.TrimSpace(string(host)) == "81" {
		t.Error("the host's sysctl changed")
	}

	before := countLeaks(t, d)
	for name, sysctls := range map[string]map[string]string{
		"host sysctl":         {"kernel.hostname": "evil"},
		"vm sysctl":           {"vm.swappiness": "1"},
		"missing sysctl":      {"net.ipv4.no_such_thing": "1"},
		"escaping name":       {"net/../../kernel/hostname": "x"},
		"net on host network": {"net.ipv4.ip_forward": "1"},
	} {
		cfg := podConfig("bad-sysctl")
		cfg.Linux.Sysctls = sysctls
		if name == "net on host network" {
			cfg.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
		}
		_, err := d.runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "linux.sysctls[") {
			t.Errorf("%s: %v, want InvalidArgument naming linux.sysctls", name, err)
		}
	}
	if after := countLeaks(t, d); after != before {
		t.Errorf("refused pods left something behind:\nbefore %+v\nafter  %+v", before, after)
	}
}

// leaks counts what pods leave on the machine.
type leaks struct {
	Mounts, Veths, Leases, IPTablesRules, Cgroups, PodInits, PodDirs, Units int
}

func countLeaks(t testing.TB, d *daemon) leaks {
	t.Helper()
	var l leaks
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], d.dir) {
			l.Mounts++
		}
	}
	links, _ := os.ReadDir("/sys/class/net")
	for _, e := range links {
		if strings.HasPrefix(e.Name(), "veth") {
			l.Veths++
		}
	}
	leases, _ := os.ReadDir(filepath.Join(d.dir, "cni-data", "e2e"))
	for _, e := range leases {
		if e.Name() != "lock" && !strings.HasPrefix(e.Name(), "last_reserved_ip") {
			l.Leases++
		}
	}
	if out, err := exec.Command("iptables-save").Output(); err == nil {
		// The network's own masquerade rules come with its config, not
		// with a pod, and stay (network.RemoveMasquerade); the network
		// package tests their life.
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "-A ") && !strings.Contains(line, "HUSK-MASQ-") {
				l.IPTablesRules++
			}
		}
	}
	if systemdHost() {
		// The systemd driver's units, loaded in any state (a failed one
		// would keep its name taken).
		out, _ := exec.Command("systemctl", "list-units", "--all", "--plain", "--no-legend", "husk-*", "*-husk_*").Output()
		l.Units = len(strings.FieldsFunc(string(out), func(r rune) bool { return r == '\n' }))
	}
	cgs, _ := os.ReadDir(huskCgroupRoot())
	for _, e := range cgs {
		if e.IsDir() {
			l.Cgroups++
		}
	}
	out, _ := exec.Command("pgrep", "-f", "^husk-runtime pod-init").Output()
	l.PodInits = len(strings.Fields(string(out)))
	for _, dir := range []string{filepath.Join(d.root, "pods"), filepath.Join(d.state, "pods")} {
		entries, _ := os.ReadDir(dir)
		l.PodDirs += len(entries)
	}
	return l
}

func TestRunStopRemoveCyclesLeaveNothing(t *testing.T) {
	d, _ := newPodDaemon(t)
	// The bridge and its masquerade rules stay once the first pod made
	// them, and so do portmap's top-level chains once a first host port
	// did: count after a first pod with one (run alone, the test counted
	// portmap's chains as left by the cycles).
	first := podConfig("warmup")
	first.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 30999}}
	id := runPod(t, d, first)
	stopPod(t, d, id)
	removePod(t, d, id)
	before := countLeaks(t, d)
	for i := range 50 {
		cfg := podConfig(fmt.Sprintf("cycle-%d", i))
		if i%2 == 0 {
			cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
			cfg.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: int32(31000 + i)}}
		}
		id := runPod(t, d, cfg)
		if i == 0 {
			// The counter sees what it counts: this pod's init.
			if got := countLeaks(t, d); got.PodInits != before.PodInits+1 {
				t.Fatalf("with a pod init running, %d counted, want %d", got.PodInits, before.PodInits+1)
			}
		}
		stopPod(t, d, id)
		stopPod(t, d, id) // twice: stop is idempotent
		removePod(t, d, id)
		removePod(t, d, id)
	}
	if after := countLeaks(t, d); after != before {
		t.Errorf("50 cycles left something behind:\nbefore %+v\nafter  %+v", before, after)
	}
}

func TestStopAndRemoveOfUnknownPodSucceed(t *testing.T) {
	d, _ := newPodDaemon(t)
	stopPod(t, d, "0123456789abcdef")
	removePod(t, d, "0123456789abcdef")
	if _, err := d.runtime.PodSandboxStatus(context.Background(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "0123456789abcdef"}); status.Code(err) != codes.NotFound {
		t.Errorf("status of an unknown pod: %v", err)
	}
}

func TestBrokenConflistIsAClearErrorAndLeavesNothing(t *testing.T) {
	d := newDaemon(t, "")
	n := newPodNet(t, d)
	before := countLeaks(t, d)
	if err := os.WriteFile(filepath.Join(d.cniConfDir(), "10-broken.conflist"), []byte(`{"cniVersion":"1.0.0","name":"broken","plugins":[{"type":`), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := d.runtime.Status(context.Background(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Status.Conditions {
		if c.Type == runtimeapi.NetworkReady && (c.Status || !strings.Contains(c.Message, "10-broken.conflist")) {
			t.Errorf("NetworkReady %v %q", c.Status, c.Message)
		}
	}
	_, err = d.runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: podConfig("broken")})
	if err == nil || !strings.Contains(err.Error(), "10-broken.conflist") {
		t.Errorf("RunPodSandbox with a broken conflist: %v", err)
	}
	// A plugin that fails in the middle of ADD, after bridge made a veth
	// and took an IP.
	_ = os.Remove(filepath.Join(d.cniConfDir(), "10-broken.conflist"))
	n.install(t, d, `{"type":"no-such-plugin"}`)
	_, err = d.runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: podConfig("failing")})
	if err == nil || !strings.Contains(err.Error(), "no-such-plugin") {
		t.Errorf("RunPodSandbox with a missing plugin: %v", err)
	}
	if after := countLeaks(t, d); after != before {
		t.Errorf("failed pods left something behind:\nbefore %+v\nafter  %+v", before, after)
	}
	list, _ := d.runtime.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{})
	if len(list.GetItems()) != 0 {
		t.Errorf("failed pods are listed: %v", list.Items)
	}
}

func TestListPodSandboxFilters(t *testing.T) {
	d, _ := newPodDaemon(t)
	a := runPod(t, d, podConfig("list-a"))
	b := runPod(t, d, podConfig("list-b"))
	stopPod(t, d, b)
	list := func(f *runtimeapi.PodSandboxFilter) []string {
		resp, err := d.runtime.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, p := range resp.Items {
			ids = append(ids, p.Id)
		}
		return ids
	}
	for name, tc := range map[string]struct {
		f    *runtimeapi.PodSandboxFilter
		want []string
	}{
		"all":       {nil, []string{a, b}},
		"id prefix": {&runtimeapi.PodSandboxFilter{Id: a[:12]}, []string{a}},
		"ready":     {&runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}, []string{a}},
		"not ready": {&runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}}, []string{b}},
		"label":     {&runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "list-b"}}, []string{b}},
		"no match":  {&runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "nope"}}, nil},
	} {
		if got := list(tc.f); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

func TestSecondRunWithSameMetadataWaitsForTheFirst(t *testing.T) {
	d, n := newPodDaemon(t)
	marker := filepath.Join(d.dir, "slow")
	n.install(t, d, fmt.Sprintf(`{"type":"slowcni","sleep":"1s","marker":%q}`, marker))
	cfg := podConfig("twice")
	ids := make([]string, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			resp, err := d.runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
			errs[i] = err
			if err == nil {
				ids[i] = resp.PodSandboxId
			}
		})
		if i == 0 {
			waitFor(t, func() bool { _, err := os.Stat(marker + ".ADD"); return err == nil })
		}
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || ids[0] != ids[1] {
		t.Fatalf("two runs of one pod: %v %v, ids %v", errs[0], errs[1], ids)
	}
	_, err := d.runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("a third run after the first finished: %v", err)
	}
}

func TestRuntimeConfigReportsTheCgroupDriver(t *testing.T) {
	for _, driver := range []string{"cgroupfs", "systemd"} {
		if driver == "systemd" && !systemdHost() {
			// Refused at start, saying why, rather than at the first pod.
			dir := t.TempDir()
			out, err := exec.Command(huskBin, "serve", "--cgroup-driver", "systemd", "--root", filepath.Join(dir, "root"),
				"--state", filepath.Join(dir, "state"), "--listen", filepath.Join(dir, "husk.sock")).CombinedOutput()
			want := "needs systemd as PID 1"
			if !unifiedHost {
				want = "cgroup v2 alone"
			}
			if err == nil || !strings.Contains(string(out), want) {
				t.Errorf("husk serve --cgroup-driver systemd without systemd on v2: %v\n%s\nwant a refusal saying %q", err, out, want)
			}
			continue
		}
		d := newDaemon(t, "", "--cgroup-driver", driver)
		resp, err := d.runtime.RuntimeConfig(context.Background(), &runtimeapi.RuntimeConfigRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.ToLower(resp.GetLinux().GetCgroupDriver().String()); got != driver {
			t.Errorf("driver %s reported as %s", driver, got)
		}
	}
}

func TestPodCgroupUnderKubeletParentWithResources(t *testing.T) {
	d, _ := newPodDaemon(t)
	uid := fmt.Sprintf("e2e%d", rand.IntN(1_000_000))
	// kubelet's pod cgroup, in the form of the daemon's driver.
	parent, parentPath, made := "/kubepods-e2e/burstable/pod"+uid, "/kubepods-e2e/burstable/pod"+uid, []string{"/kubepods-e2e/burstable/pod" + uid, "/kubepods-e2e/burstable", "/kubepods-e2e"}
	if e2eDriver() == "systemd" {
		parent = "kubepodse2e-burstable-pod" + uid + ".slice"
		parentPath = "/kubepodse2e.slice/kubepodse2e-burstable.slice/kubepodse2e-burstable-pod" + uid + ".slice"
		made = []string{parentPath, "/kubepodse2e.slice/kubepodse2e-burstable.slice", "/kubepodse2e.slice"}
	}
	cfg := podConfig("cg")
	cfg.Linux.CgroupParent = parent
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 256 << 20, CpuShares: 512}
	id := runPod(t, d, cfg)
	_, info := podStatus(t, d, id)
	if !strings.HasPrefix(info.CgroupPath, parentPath+"/") {
		t.Fatalf("pod cgroup %s is not under %s", info.CgroupPath, parentPath)
	}
	limits := cgroupLimits
	// kubelet's pod cgroup, the parent, holds the pod's limits: husk's
	// adds none (the sum kubelet sends leaves out containers without one).
	if limit, shares := limits(info.CgroupPath); limit != noMemoryLimit() || shares != cpuWeight(0) {
		t.Errorf("under kubelet's pod cgroup: memory limit %q, cpu shares %q; want none", limit, shares)
	}
	// In-place pod resize: recorded, and refused for no reason (kubelet
	// tells the runtime before it raises its own cgroup).
	resize := &runtimeapi.UpdatePodSandboxResourcesRequest{
		PodSandboxId: id,
		Resources:    &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 512 << 20, CpuShares: 1024, CpuPeriod: 100000, CpuQuota: 400000},
		Overhead:     &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20, CpuShares: 24},
	}
	if _, err := d.runtime.UpdatePodSandboxResources(context.Background(), resize); err != nil {
		t.Fatalf("UpdatePodSandboxResources: %v", err)
	}
	// A pod without a parent (crictl's) is held to its resources plus its
	// overhead by husk, and follows a resize.
	alone := podConfig("cg-alone")
	alone.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 256 << 20, CpuShares: 512}
	aloneID := runPod(t, d, alone)
	_, aloneInfo := podStatus(t, d, aloneID)
	if limit, shares := limits(aloneInfo.CgroupPath); limit != fmt.Sprint(256<<20) || shares != cpuWeight(512) {
		t.Errorf("a pod without a parent: memory limit %q, cpu shares %q", limit, shares)
	}
	resize.PodSandboxId = aloneID
	if _, err := d.runtime.UpdatePodSandboxResources(context.Background(), resize); err != nil {
		t.Fatalf("UpdatePodSandboxResources: %v", err)
	}
	if limit, shares := limits(aloneInfo.CgroupPath); limit != fmt.Sprint(528<<20) || shares != cpuWeight(1048) {
		t.Errorf("after the resize: memory limit %q, cpu shares %q", limit, shares)
	}
	for req, want := range map[*runtimeapi.UpdatePodSandboxResourcesRequest]codes.Code{
		{}:                            codes.InvalidArgument,
		{PodSandboxId: "no-such-pod"}: codes.NotFound,
	} {
		if _, err := d.runtime.UpdatePodSandboxResources(context.Background(), req); status.Code(err) != want {
			t.Errorf("UpdatePodSandboxResources %v: %v, want %v", req, err, want)
		}
	}
	removePod(t, d, aloneID)
	removePod(t, d, id)
	if _, err := os.Stat(cgroupDir(info.CgroupPath)); !os.IsNotExist(err) {
		t.Errorf("pod cgroup left after removal: %v", err)
	}
	removeCgroupDirs(made...)
}

func TestPodsSurviveADaemonRestart(t *testing.T) {
	d, _ := newPodDaemon(t)
	cfg := podConfig("survivor")
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	id := runPod(t, d, cfg)
	st, info := podStatus(t, d, id)
	listenIn(t, info.Namespaces["net"], ":8080", "still here")
	before := countLeaks(t, d)
	d.restart()
	st2, info2 := podStatus(t, d, id)
	if st2.State != runtimeapi.PodSandboxState_SANDBOX_READY || st2.Network.Ip != st.Network.Ip || info2.Init.PID != info.Init.PID {
		t.Fatalf("after restart: %v %+v", st2, info2)
	}
	if got, err := readFrom(net.JoinHostPort(st.Network.Ip, "8080")); err != nil || got != "still here" {
		t.Errorf("pod network after restart: %q, %v", got, err)
	}
	if after := countLeaks(t, d); after != before {
		t.Errorf("restart changed what is on the machine:\nbefore %+v\nafter  %+v", before, after)
	}
}

// The daemon is killed while a CNI plugin of RunPodSandbox runs; after a
// restart the half-made pod is gone without a trace, and one killed while
// stopping a pod is stopped and removed without a trace.
func TestSIGKILLDuringRunAndStopLeavesNothing(t *testing.T) {
	d, n := newPodDaemon(t)
	warm := runPod(t, d, podConfig("warm"))
	removePod(t, d, warm)
	before := countLeaks(t, d)
	marker := filepath.Join(d.dir, "slow")
	hold := filepath.Join(d.dir, "hold")
	n.install(t, d, fmt.Sprintf(`{"type":"slowcni","hold":%q,"marker":%q}`, hold, marker))
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := podConfig("killed")
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	go func() {
		_, _ = d.runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	}()
	waitFor(t, func() bool { _, err := os.Stat(marker + ".ADD"); return err == nil })
	_ = d.stop(syscall.SIGKILL)
	_ = os.Remove(hold)
	d.start()
	list, err := d.runtime.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{})
	if err != nil || len(list.Items) != 0 {
		t.Fatalf("after a kill during RunPodSandbox: %v, %v", list, err)
	}
	if after := countLeaks(t, d); after != before {
		t.Errorf("a kill during RunPodSandbox left something behind:\nbefore %+v\nafter  %+v", before, after)
	}

	// Now during StopPodSandbox, while CNI DEL runs, of a pod without an
	// init (kubelet's default): nothing but the record tells it is stopping.
	cfg = podConfig("killed-in-stop")
	id := runPod(t, d, cfg)
	_ = os.Remove(marker + ".DEL")
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = d.runtime.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
	}()
	waitFor(t, func() bool { _, err := os.Stat(marker + ".DEL"); return err == nil })
	_ = d.stop(syscall.SIGKILL)
	_ = os.Remove(hold)
	d.start()
	st, _ := podStatus(t, d, id)
	if st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Fatalf("state after a kill during stop: %v", st.State)
	}
	if l := countLeaks(t, d); l.Leases != before.Leases || l.Veths != before.Veths {
		t.Errorf("the interrupted stop was not finished at restart: %+v, want %+v", l, before)
	}
	stopPod(t, d, id)
	removePod(t, d, id)
	if after := countLeaks(t, d); after != before {
		t.Errorf("a kill during StopPodSandbox left something behind:\nbefore %+v\nafter  %+v", before, after)
	}
}

// A pod that shares its PID namespace gets a tiny init as PID 1, which
// reaps orphans, runs with nothing of the host's, and whose death makes the
// pod NotReady.
func TestPodInitReapsAndIsConfined(t *testing.T) {
	d, _ := newPodDaemon(t)
	cfg := podConfig("shared-pid")
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	id := runPod(t, d, cfg)
	_, info := podStatus(t, d, id)
	if info.Init == nil {
		t.Fatal("no pod init")
	}
	initPID := info.Init.PID
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", initPID))
	for _, want := range []string{"NSpid:\t" + fmt.Sprint(initPID) + "\t1\n", "Uid:\t65534\t65534\t65534\t65534", "CapEff:\t0000000000000000", "NoNewPrivs:\t1"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("pod init status lacks %q:\n%s", want, status)
		}
	}
	if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", initPID)); err != nil || root == "/" {
		t.Errorf("pod init's root is %q (%v), want its empty directory", root, err)
	}
	// An orphan in the pod's PID namespace is re-parented to the init and
	// reaped when it exits: the init's children go from one to none, with
	// no zombie left.
	children := func() string {
		var out []string
		procs, _ := os.ReadDir("/proc")
		for _, e := range procs {
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
			if err == nil && strings.Contains(string(b), fmt.Sprintf("\nPPid:\t%d\n", initPID)) {
				out = append(out, e.Name())
			}
		}
		return strings.Join(out, " ")
	}
	err := ns.Do(map[ns.Type]string{ns.PID: info.Namespaces["pid"]}, func() error {
		return exec.Command("sh", "-c", "sleep 0.5 & exit 0").Run()
	})
	if err != nil {
		t.Fatal(err)
	}
	if children() == "" {
		t.Fatal("the orphan was not re-parented to the pod init")
	}
	waitFor(t, func() bool { return children() == "" })
	// The init dies: the pod can no longer take processes.
	if err := syscall.Kill(initPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		st, _ := podStatus(t, d, id)
		return st.State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	})
}

// Stop alone releases the pod's IP and network; the pod stays listed.
func TestStopReleasesTheNetwork(t *testing.T) {
	d, _ := newPodDaemon(t)
	warm := runPod(t, d, podConfig("warm"))
	removePod(t, d, warm)
	before := countLeaks(t, d)
	id := runPod(t, d, podConfig("stopped"))
	if l := countLeaks(t, d); l.Leases != before.Leases+1 || l.Veths != before.Veths+1 {
		t.Fatalf("running pod: %+v", l)
	}
	stopPod(t, d, id)
	st, _ := podStatus(t, d, id)
	if st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("state after stop: %v", st.State)
	}
	l := countLeaks(t, d)
	if l.Leases != before.Leases || l.Veths != before.Veths || l.IPTablesRules != before.IPTablesRules {
		t.Errorf("after stop: %+v, before the pod: %+v", l, before)
	}
}

func TestPodOverheadAddsToResources(t *testing.T) {
	d, _ := newPodDaemon(t)
	cfg := podConfig("overhead")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20}
	cfg.Linux.Overhead = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}
	id := runPod(t, d, cfg)
	_, info := podStatus(t, d, id)
	if limit, _ := cgroupLimits(info.CgroupPath); limit != fmt.Sprint(160<<20) {
		t.Errorf("memory limit %q; want resources + overhead", limit)
	}
}

// kubelet lists pods all the time; a List racing RunPodSandbox must see
// whole pods only, and never one still being made.
func TestListWhileRunning(t *testing.T) {
	d, _ := newPodDaemon(t)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			list, err := d.runtime.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{})
			if err != nil {
				t.Errorf("ListPodSandbox: %v", err)
				return
			}
			for _, p := range list.Items {
				if p.State != runtimeapi.PodSandboxState_SANDBOX_READY {
					t.Errorf("listed a pod that is not ready: %v", p)
				}
			}
		}
	})
	for i := range 10 {
		cfg := podConfig(fmt.Sprintf("listed-%d", i))
		cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
		runPod(t, d, cfg)
	}
	close(done)
	wg.Wait()
}

// A conflist with an IPv4 and an IPv6 range gives the pod both, IPv4 first.
func TestDualStackPodIPs(t *testing.T) {
	d := newDaemon(t, "")
	n := newPodNet(t, d)
	v6 := fmt.Sprintf("fd%02x:%04x::/64", rand.IntN(256), rand.IntN(65536))
	conf := strings.Replace(n.conflist(), fmt.Sprintf(`"ranges":[[{"subnet":%q}]]`, n.subnet),
		fmt.Sprintf(`"ranges":[[{"subnet":%q}],[{"subnet":%q}]]`, n.subnet, v6), 1)
	t.Cleanup(func() {
		if err := network.RemoveMasquerade([]byte(conf)); err != nil {
			t.Errorf("removing the masquerade rules: %v", err)
		}
	})
	if err := os.WriteFile(filepath.Join(d.cniConfDir(), "10-e2e.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	id := runPod(t, d, podConfig("dual"))
	st, _ := podStatus(t, d, id)
	ip := net.ParseIP(st.GetNetwork().GetIp())
	if ip == nil || ip.To4() == nil || len(st.Network.AdditionalIps) != 1 {
		t.Fatalf("pod network status %v", st.GetNetwork())
	}
	if v6ip := net.ParseIP(st.Network.AdditionalIps[0].Ip); v6ip == nil || v6ip.To4() != nil {
		t.Errorf("second IP %q is not IPv6", st.Network.AdditionalIps[0].Ip)
	}
	resp, err := d.runtime.PodSandboxStatus(context.Background(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil || resp.Info["networkCheck"] != `"ok"` {
		t.Errorf("CNI CHECK in verbose status: %q, %v", resp.GetInfo()["networkCheck"], err)
	}
}

func TestBadBandwidthAnnotationIsInvalid(t *testing.T) {
	d, _ := newPodDaemon(t)
	cfg := podConfig("bw")
	cfg.Annotations = map[string]string{"kubernetes.io/ingress-bandwidth": "lots"}
	_, err := d.runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "kubernetes.io/ingress-bandwidth") {
		t.Errorf("RunPodSandbox with a bad bandwidth annotation: %v", err)
	}
	cfg.Annotations = map[string]string{"kubernetes.io/ingress-bandwidth": "10M", "kubernetes.io/egress-bandwidth": "20M"}
	id := runPod(t, d, cfg)
	// The bandwidth plugin shapes on the host side: a tbf at each rate.
	out, err := exec.Command("tc", "qdisc", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, rate := range []string{"rate 10Mbit", "rate 20Mbit"} {
		if !strings.Contains(string(out), rate) {
			t.Errorf("no tbf qdisc with %s:\n%s", rate, out)
		}
	}
	stopPod(t, d, id)
	out, _ = exec.Command("tc", "qdisc", "show").Output()
	if strings.Contains(string(out), "rate 10Mbit") {
		t.Errorf("shaping left after stop:\n%s", out)
	}
}

// With the systemd driver the pod is a transient slice in kubelet's pod
// slice, its init a scope in it, and systemd made both (they are units);
// removing the pod stops them.
func TestSystemdDriverPodCgroup(t *testing.T) {
	if !systemdHost() {
		t.Skip("needs systemd as PID 1 on cgroup v2 alone: make vm-test runs this in such a guest")
	}
	d, _ := newPodDaemon(t, "--cgroup-driver", "systemd")
	uid := fmt.Sprintf("e2e%d", rand.IntN(1_000_000))
	kubelet := "kubepods-besteffort-pod" + uid + ".slice"
	cfg := podConfig("slice")
	cfg.Linux.CgroupParent = kubelet
	// A pod whose containers share its PID namespace has an init.
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	t.Cleanup(func() {
		// kubelet makes and removes its slices; here the test does.
		_ = exec.Command("systemctl", "stop", kubelet).Run()
	})
	id := runPod(t, d, cfg)
	_, info := podStatus(t, d, id)
	podUnit := "kubepods-besteffort-pod" + uid + "-husk_" + id + ".slice"
	want := "/kubepods.slice/kubepods-besteffort.slice/" + kubelet + "/" + podUnit
	if info.CgroupPath != want {
		t.Fatalf("pod cgroup %s, want %s", info.CgroupPath, want)
	}
	initUnit := "husk-" + id + ".scope"
	for _, unit := range []string{podUnit, initUnit} {
		if out, err := exec.Command("systemctl", "is-active", unit).CombinedOutput(); err != nil {
			t.Errorf("%s: %v %s", unit, err, out)
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", info.Init.PID)); err != nil || strings.TrimSpace(string(b)) != "0::"+want+"/"+initUnit {
		t.Errorf("pod init in %q (%v), want %s/%s", b, err, want, initUnit)
	}
	removePod(t, d, id)
	if _, err := os.Stat(cgroupDir(want)); !os.IsNotExist(err) {
		t.Errorf("pod cgroup left: %v", err)
	}
	out, _ := exec.Command("systemctl", "list-units", "--all", "--no-legend", podUnit, initUnit).Output()
	if strings.TrimSpace(string(out)) != "" {
		t.Errorf("units left after removal:\n%s", out)
	}
}
