// Package network attaches pod sandboxes to the pod network through CNI
// (libcni and the standard plugins): the first network config found in
// the config directory; the loopback interface it brings up itself.
// Everything DEL needs is kept in a persistent cache, so a sandbox can be
// torn down by a restarted daemon, after a reboot, and after its network
// config changed or disappeared.
package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	cniutils "github.com/containernetworking/cni/pkg/utils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/internal/atomicfile"
	"github.com/husk-runtime/husk/network/ns"
)

// Defaults match what kubelet, containerd and the CNI plugin packages assume.
const (
	DefaultConfDir = "/etc/cni/net.d"
	DefaultBinDir  = "/opt/cni/bin"
	// DefaultCacheDir is libcni's own default; husk normally passes a
	// directory under its root instead.
	DefaultCacheDir = "/var/lib/cni"

	// NotReadyReason is the CRI NetworkReady condition reason kubelet and
	// crictl expect while no usable network config exists.
	NotReadyReason = "NetworkPluginNotReady"

	podIfName = "eth0"
	// loopbackIfName is the interface of the loopback network that husk
	// attached with CNI's loopback plugin until 2026-12-06: pods made
	// then have it in the cache, and DEL runs it for them.
	loopbackIfName = "lo"
)

// ErrNotAttached is returned by Check for a sandbox that has no network
// attachment recorded (never set up, or already torn down).
var ErrNotAttached = errors.New("sandbox has no network attachment")

// confExtensions are the file names containerd and CRI-O consider network
// configs; the lexically first one is the pod network.
var confExtensions = []string{".conf", ".conflist", ".json"}

// Config locates the CNI configs, plugins and cache.
type Config struct {
	ConfDir string   // default /etc/cni/net.d
	BinDirs []string // default [/opt/cni/bin]
	// CacheDir is libcni's result/config cache. It must persist (husk passes
	// <root>/cni) so DEL works after a daemon restart and after a reboot.
	CacheDir string
}

// Manager is safe for concurrent use by many sandboxes.
type Manager struct {
	cfg Config
	cni measuredCNI

	mu  sync.Mutex
	cur *loadedConf // last config read from ConfDir, reused while its files are unchanged
}

// hostPortsReady is set once an ADD with host ports has succeeded in this
// process. Until then such ADDs run one at a time: the portmap plugin
// makes its node-wide iptables chains on first use, and two plugins making
// them at once fail ("CHAIN_USER_ADD failed (File exists)").
var hostPortsReady struct {
	sync.Mutex
	done bool
}

// firstHostPorts holds an ADD with host ports until the chains exist;
// the function it returns is called with the ADD's success.
func firstHostPorts(ports bool) func(ok bool) {
	if !ports {
		return func(bool) {}
	}
	hostPortsReady.Lock()
	if hostPortsReady.done {
		hostPortsReady.Unlock()
		return func(bool) {}
	}
	return func(ok bool) {
		if ok {
			hostPortsReady.done = true
		}
		hostPortsReady.Unlock()
	}
}

// loadedConf is the result of reading one config file, good or bad; the
// fingerprint decides when it must be read again.
type loadedConf struct {
	file        string
	fingerprint string
	list        *libcni.NetworkConfigList
	err         error
	masq        *masquerade // rules the config asks for, or nil
	masqOn      bool        // masq has been applied
}

// usable applies the masquerade rules the config asks for the first time it
// is used; a failure is tried again on the next call, since iptables may be
// installed after the daemon started. Called with Manager.mu held.
func (l *loadedConf) usable() error {
	if l.err != nil {
		return l.err
	}
	if l.masq != nil && !l.masqOn {
		if err := l.masq.apply(); err != nil {
			return fmt.Errorf("%s: masquerading the subnets of network %q (%s): %w", l.file, l.list.Name, MasqueradeKey, err)
		}
		l.masqOn = true
		klog.Infof("CNI: network %q masqueraded by iptables chain %s", l.list.Name, l.masq.chain)
	}
	return nil
}

// New does not require ConfDir or the plugins to exist yet: Status reports
// what is missing and every call looks again, so a machine can be configured
// after the daemon started.
func New(cfg Config) (*Manager, error) {
	if cfg.ConfDir == "" {
		cfg.ConfDir = DefaultConfDir
	}
	if len(cfg.BinDirs) == 0 {
		cfg.BinDirs = []string{DefaultBinDir}
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("CNI cache dir: %w", err)
	}
	return &Manager{
		cfg: cfg,
		cni: measuredCNI{libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, cfg.CacheDir, nil)},
	}, nil
}

// Status is what the CRI Status call reports as the NetworkReady condition.
func (m *Manager) Status() (ready bool, reason, message string) {
	if _, err := m.network(); err != nil {
		return false, NotReadyReason, err.Error()
	}
	return true, "", ""
}

// NetworkName is for verbose status output.
func (m *Manager) NetworkName() string {
	l, err := m.load()
	if err != nil {
		return ""
	}
	return l.Name
}

// PortMapping is a CRI port mapping; only those with a HostPort reach the
// portmap plugin.
type PortMapping struct {
	Protocol      string // "tcp", "udp" or "sctp"; "" means tcp
	ContainerPort int32
	HostPort      int32
	HostIP        string
}

// Pod names a sandbox to the CNI plugins.
type Pod struct {
	ID        string // sandbox id, the CNI container id
	NetNS     string // path of the pinned network namespace
	Name      string
	Namespace string
	UID       string

	PortMappings []PortMapping
	Bandwidth    *Bandwidth
}

// Result is what the CRI reports as the pod's IPs.
type Result struct {
	IPs       []net.IP // the pod's addresses on eth0; IPv4 first, then IPv6
	Interface string
}

// Setup undoes everything it did when it fails, so the caller has nothing to
// clean up. The network config is looked up again on each call: a new or
// changed config applies to the next pod without a restart.
func (m *Manager) Setup(ctx context.Context, pod Pod) (*Result, error) {
	if err := cniutils.ValidateContainerID(pod.ID); err != nil {
		return nil, fmt.Errorf("CNI setup: sandbox id: %w", err)
	}
	if pod.NetNS == "" {
		return nil, fmt.Errorf("CNI setup of sandbox %s: network namespace is required", pod.ID)
	}
	list, err := m.network()
	if err != nil {
		return nil, fmt.Errorf("pod network not ready: %w", err)
	}

	// A fresh network namespace has lo down, and pods expect 127.0.0.1
	// to work. Brought up here, not by CNI's loopback plugin (containerd
	// runs it): a Go program started for each ADD and each DEL, 10-16 ms
	// of CPU here, whose DEL ran beside the pod network's and slowed it.
	if err := ns.Do(map[ns.Type]string{ns.Net: pod.NetNS}, loopbackUp); err != nil {
		return nil, fmt.Errorf("CNI setup of sandbox %s: bringing lo up: %w", pod.ID, err)
	}
	podRT := &libcni.RuntimeConf{
		ContainerID:    pod.ID,
		NetNS:          pod.NetNS,
		IfName:         podIfName,
		Args:           cniArgs(pod),
		CapabilityArgs: capabilityArgs(pod),
	}
	done := firstHostPorts(len(pod.PortMappings) > 0)
	res, err := m.add(ctx, list, podRT)
	done(err == nil)
	if err != nil {
		// A failed ADD has already been undone by add (or left pending
		// for Teardown).
		return nil, fmt.Errorf("CNI setup of sandbox %s: network %q: %w", pod.ID, list.Name, err)
	}

	out, err := podResult(res)
	if err != nil {
		err = fmt.Errorf("CNI setup of sandbox %s: network %q: %w", pod.ID, list.Name, err)
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if derr := m.Teardown(cctx, pod); derr != nil {
			err = errors.Join(err, fmt.Errorf("undoing setup: %w", derr))
		}
		return nil, err
	}
	return out, nil
}

// Teardown runs DEL with the config and arguments recorded at ADD time, not
// the current config: the plugins need the same input (bridge name, IPAM data
// dir, port mappings) to find what they created. A NetNS that is empty or no
// longer a mounted namespace is passed to the plugins as "" (allowed by CNI),
// and what bridge then cannot clean up on its own is removed here. Nothing
// recorded means nothing to do.
func (m *Manager) Teardown(ctx context.Context, pod Pod) error {
	// The id names files in the cache dir: never let it be a path.
	if err := cniutils.ValidateContainerID(pod.ID); err != nil {
		return fmt.Errorf("CNI teardown: sandbox id: %w", err)
	}
	atts, err := m.attachments(pod.ID)
	if err != nil {
		return fmt.Errorf("CNI teardown of sandbox %s: %w", pod.ID, err)
	}
	netns := pod.NetNS
	if netns != "" && !isNetNS(netns) {
		netns = ""
	}
	// The attachments (the pod network, and the loopback of a pod made
	// before husk brought lo up itself) are independent: their DELs run
	// at once.
	errs := make([]error, len(atts))
	var wg sync.WaitGroup
	for i, a := range atts {
		list, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil {
			errs[i] = fmt.Errorf("network %q: recorded config: %w", a.Network, err)
			continue
		}
		rt := &libcni.RuntimeConf{
			ContainerID:    pod.ID,
			NetNS:          netns,
			IfName:         a.IfName,
			Args:           passableArgs(pod.ID, a.CniArgs),
			CapabilityArgs: a.CapabilityArgs,
		}
		wg.Go(func() {
			if err := m.del(ctx, list, rt, netns == ""); err != nil {
				errs[i] = fmt.Errorf("network %q: %w", a.Network, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("CNI teardown of sandbox %s: %w", pod.ID, err)
	}
	return nil
}

// Check runs CHECK against the config the sandbox was set up with.
func (m *Manager) Check(ctx context.Context, pod Pod) error {
	if err := cniutils.ValidateContainerID(pod.ID); err != nil {
		return fmt.Errorf("CNI check: sandbox id: %w", err)
	}
	atts, err := m.cni.GetCachedAttachments(pod.ID)
	if err != nil {
		return fmt.Errorf("CNI check of sandbox %s: %w", pod.ID, err)
	}
	if len(atts) == 0 {
		return fmt.Errorf("CNI check of sandbox %s: %w", pod.ID, ErrNotAttached)
	}
	for _, a := range atts {
		list, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil {
			return fmt.Errorf("CNI check of sandbox %s: network %q: recorded config: %w", pod.ID, a.Network, err)
		}
		rt := &libcni.RuntimeConf{
			ContainerID:    pod.ID,
			NetNS:          pod.NetNS,
			IfName:         a.IfName,
			Args:           passableArgs(pod.ID, a.CniArgs),
			CapabilityArgs: a.CapabilityArgs,
		}
		err = m.cni.CheckNetworkList(ctx, list, rt)
		if err != nil && !errors.Is(err, libcni.ErrorCheckNotSupp) {
			return fmt.Errorf("CNI check of sandbox %s: network %q: %w", pod.ID, a.Network, err)
		}
	}
	return nil
}

// add runs ADD, and DEL when ADD fails, so that a failed ADD leaves nothing.
// A pending record written first lets Teardown find the attachment if the
// daemon dies during ADD or the DEL fails: libcni only caches after a
// successful ADD.
func (m *Manager) add(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	if err := m.writePending(list, rt); err != nil {
		return nil, err
	}
	res, err := m.cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if derr := m.cni.DelNetworkList(cctx, list, rt); derr != nil {
			return nil, errors.Join(err, fmt.Errorf("undoing failed ADD (left for teardown to retry): %w", derr))
		}
		m.removePending(rt)
		return nil, err
	}
	m.removePending(rt)
	return res, nil
}

// del runs DEL and forgets the attachment once it succeeded.
func (m *Manager) del(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf, noNetNS bool) error {
	if noNetNS {
		// Before DEL: if this fails, the cache is still there to retry with.
		if err := cleanupBridgeMasq(ctx, list, rt.ContainerID); err != nil {
			return err
		}
	}
	if err := m.cni.DelNetworkList(ctx, list, rt); err != nil {
		return err
	}
	m.removePending(rt)
	return nil
}

// attachment is one network a sandbox is attached to, as recorded by libcni's
// cache or by a pending record.
type attachment struct {
	Network        string                 `json:"network"`
	IfName         string                 `json:"ifName"`
	Config         []byte                 `json:"config"`
	CniArgs        [][2]string            `json:"cniArgs,omitempty"`
	CapabilityArgs map[string]interface{} `json:"capabilityArgs,omitempty"`
}

// attachments lists what Teardown must delete, the pod network before lo
// (the order its errors are reported in; the DELs run at once).
func (m *Manager) attachments(id string) ([]attachment, error) {
	cached, err := m.cni.GetCachedAttachments(id)
	if err != nil {
		return nil, err
	}
	var out []attachment
	seen := map[string]bool{}
	for _, c := range cached {
		out = append(out, attachment{Network: c.Network, IfName: c.IfName, Config: c.Config, CniArgs: c.CniArgs, CapabilityArgs: c.CapabilityArgs})
		seen[c.IfName] = true
	}
	pending, err := m.readPending(id)
	if err != nil {
		return nil, err
	}
	for _, p := range pending {
		if !seen[p.IfName] {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b attachment) int {
		return boolInt(a.IfName == loopbackIfName) - boolInt(b.IfName == loopbackIfName)
	})
	return out, nil
}

// loopbackUp brings up lo in the network namespace of the calling thread.
func loopbackUp() error {
	lo, err := netlink.LinkByName(loopbackIfName)
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (m *Manager) pendingDir() string { return filepath.Join(m.cfg.CacheDir, "husk-pending") }

func pendingName(id, ifName string) string { return id + "-" + ifName + ".json" }

func (m *Manager) writePending(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	b, err := json.Marshal(attachment{
		Network:        list.Name,
		IfName:         rt.IfName,
		Config:         list.Bytes,
		CniArgs:        rt.Args,
		CapabilityArgs: rt.CapabilityArgs,
	})
	if err != nil {
		return err
	}
	dir := m.pendingDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("recording CNI attachment: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, pendingName(rt.ContainerID, rt.IfName)), b, 0o600, atomicfile.Options{}); err != nil {
		return fmt.Errorf("recording CNI attachment: %w", err)
	}
	return nil
}

func (m *Manager) removePending(rt *libcni.RuntimeConf) {
	err := os.Remove(filepath.Join(m.pendingDir(), pendingName(rt.ContainerID, rt.IfName)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		klog.Warningf("CNI: removing pending record of sandbox %s: %v", rt.ContainerID, err)
	}
}

func (m *Manager) readPending(id string) ([]attachment, error) {
	var out []attachment
	for _, ifName := range []string{podIfName, loopbackIfName} {
		b, err := os.ReadFile(filepath.Join(m.pendingDir(), pendingName(id, ifName)))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var a attachment
		if err := json.Unmarshal(b, &a); err != nil {
			// Written atomically, so this is not a torn write; do not let
			// one bad file block teardown of the rest.
			klog.Warningf("CNI: ignoring unreadable pending record of sandbox %s: %v", id, err)
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// network returns the pod network config, or why there is none usable.
func (m *Manager) network() (*libcni.NetworkConfigList, error) {
	list, err := m.load()
	if err != nil {
		return nil, err
	}
	if err := m.checkPlugins(list); err != nil {
		return nil, err
	}
	return list, nil
}

// checkPlugins is looked up on every call, not cached: plugins are often
// installed after the config (and after the daemon started).
func (m *Manager) checkPlugins(list *libcni.NetworkConfigList) error {
	var need []string
	for _, p := range list.Plugins {
		need = append(need, p.Network.Type)
	}
	for _, t := range need {
		if _, err := invoke.FindInPath(t, m.cfg.BinDirs); err != nil {
			return fmt.Errorf("CNI plugin %q (network %q) not found in %s", t, list.Name, strings.Join(m.cfg.BinDirs, ":"))
		}
	}
	return nil
}

// load returns the config of the lexically first config file in ConfDir,
// reading it again only when the file (or the per-network plugin directory
// libcni also reads) changed: keyed by name, mtime and size.
func (m *Manager) load() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(m.cfg.ConfDir, confExtensions)
	if err != nil {
		return nil, fmt.Errorf("reading CNI config dir: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no network config found in %s (*.conflist, *.conf or *.json)", m.cfg.ConfDir)
	}
	slices.Sort(files)
	file := files[0]

	m.mu.Lock()
	defer m.mu.Unlock()
	name := ""
	if m.cur != nil && m.cur.file == file && m.cur.list != nil {
		name = m.cur.list.Name
	}
	fp, err := fingerprint(m.cfg.ConfDir, file, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if m.cur != nil && m.cur.file == file && m.cur.fingerprint == fp {
		return m.cur.list, m.cur.usable()
	}

	l := &loadedConf{file: file}
	l.list, l.err = readConf(file)
	if l.err != nil {
		l.err = fmt.Errorf("%s: %w", file, l.err)
		l.fingerprint = fp
		klog.Errorf("CNI: invalid network config: %v", l.err)
	} else {
		if l.fingerprint, err = fingerprint(m.cfg.ConfDir, file, l.list.Name); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		klog.Infof("CNI: using network %q from %s (%d plugins)", l.list.Name, file, len(l.list.Plugins))
		if l.masq, err = parseMasquerade(l.list); err != nil {
			l.err = fmt.Errorf("%s: %w", file, err)
			klog.Errorf("CNI: invalid network config: %v", l.err)
		}
	}
	// The rules of a config that is replaced go with it, unless the new
	// one wants the very same (same network name and subnets). Pods still
	// running on the old network lose their NAT to the outside, as they
	// would lose their IPs' routes if the subnet changed under them.
	if prev := m.cur; prev != nil && prev.masqOn {
		switch {
		case l.err != nil:
			// A config that does not load (an edit half written) keeps
			// the running pods' NAT until one does.
			l.masq, l.masqOn = prev.masq, true
		case l.masq == nil || l.masq.chain != prev.masq.chain:
			if err := prev.masq.remove(); err != nil {
				klog.Errorf("CNI: removing the masquerade rules of network %q: %v", prev.masq.network, err)
			}
		}
	}
	m.cur = l
	return l.list, l.usable()
}

// fingerprint identifies the contents of a config file and, when the
// network's name is known, of the <confDir>/<name>/*.conf plugin files libcni
// appends to it.
func fingerprint(confDir, file, name string) (string, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d %d", file, fi.ModTime().UnixNano(), fi.Size())
	if name != "" {
		extra, err := libcni.ConfFiles(filepath.Join(confDir, name), []string{".conf"})
		if err != nil {
			return "", err
		}
		for _, f := range extra {
			if fi, err := os.Stat(f); err == nil {
				fmt.Fprintf(&b, "|%s %d %d", f, fi.ModTime().UnixNano(), fi.Size())
			}
		}
	}
	return b.String(), nil
}

// readConf reads a conflist, or a single-plugin .conf/.json as a list of
// one. Its Bytes are made self-contained (plugins from the per-network
// directory inlined) because they are what libcni caches for DEL.
func readConf(file string) (*libcni.NetworkConfigList, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("error parsing configuration: %w", err)
	}
	_, isList := probe["plugins"]
	if filepath.Ext(file) != ".conflist" && !isList {
		// A single-plugin config (deprecated in CNI, still common): a
		// list of one, as containerd and CRI-O treat it.
		conf, err := libcni.NetworkPluginConfFromBytes(data)
		if err != nil {
			return nil, err
		}
		if conf.Network.Name == "" {
			return nil, fmt.Errorf("error parsing configuration: missing 'name'")
		}
		return libcni.NetworkConfFromBytes(mustJSON(map[string]any{
			"cniVersion": conf.Network.CNIVersion,
			"name":       conf.Network.Name,
			"plugins":    []json.RawMessage{data},
		}))
	}

	list, err := libcni.NetworkConfFromFile(file)
	if err != nil {
		return nil, err
	}
	if list.Name == "" {
		return nil, fmt.Errorf("error parsing configuration list: empty name")
	}
	inline, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		return nil, err
	}
	if len(inline.Plugins) == len(list.Plugins) {
		return list, nil
	}
	plugins := make([]json.RawMessage, len(list.Plugins))
	for i, p := range list.Plugins {
		plugins[i] = p.Bytes
	}
	probe["plugins"] = mustJSON(plugins)
	probe["loadOnlyInlinedPlugins"] = mustJSON(true)
	return libcni.NetworkConfFromBytes(mustJSON(probe))
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// cniArgs are the CNI_ARGS kubelet's dockershim and containerd pass; some
// plugins (and IPAM) key on them.
func cniArgs(pod Pod) [][2]string {
	return [][2]string{
		{"IgnoreUnknown", "1"},
		{"K8S_POD_NAMESPACE", pod.Namespace},
		{"K8S_POD_NAME", pod.Name},
		{"K8S_POD_INFRA_CONTAINER_ID", pod.ID},
		{"K8S_POD_UID", pod.UID},
	}
}

// maxArgValue bounds a CNI_ARGS value: all of them go in one environment
// variable, which execve takes up to 128 KiB.
const maxArgValue = 4096

// passableArgs drops the CNI_ARGS that no plugin could be started with (a
// NUL, which no environment can hold; a value too long for it; ';' or '=',
// which split CNI_ARGS' pairs), so that a pod recorded with them (before
// its metadata was validated) can still be torn down: the standard
// plugins' DEL keys on the container id and interface alone. A plugin
// that needs a dropped K8S_POD_* argument at DEL fails as it would have.
func passableArgs(id string, args [][2]string) [][2]string {
	out := make([][2]string, 0, len(args))
	for _, a := range args {
		if strings.ContainsAny(a[0]+a[1], "\x00;=") || len(a[1]) > maxArgValue {
			klog.InfoS("Dropping a CNI argument no plugin can be started with", "sandbox", id, "arg", a[0], "length", len(a[1]))
			continue
		}
		out = append(out, a)
	}
	return out
}

type portMapEntry struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

type bandwidthEntry struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// capabilityArgs are passed only to plugins that declare the capability
// (libcni filters them), as runtimeConfig.
func capabilityArgs(pod Pod) map[string]interface{} {
	args := map[string]interface{}{}
	var pm []portMapEntry
	for _, p := range pod.PortMappings {
		if p.HostPort <= 0 {
			continue // not a host port: nothing for portmap to do
		}
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		pm = append(pm, portMapEntry{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: proto, HostIP: p.HostIP})
	}
	if len(pm) > 0 {
		args["portMappings"] = pm
	}
	if bw := pod.Bandwidth; bw != nil && (bw.IngressRate > 0 || bw.EgressRate > 0) {
		args["bandwidth"] = bandwidthEntry(*bw)
	}
	if len(args) == 0 {
		return nil
	}
	return args
}

// podResult picks the addresses on the pod's eth0 out of the result.
func podResult(res types.Result) (*Result, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("converting CNI result: %w", err)
	}
	var v4, v6 []net.IP
	for _, ipc := range r.IPs {
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i < 0 || i >= len(r.Interfaces) || r.Interfaces[i].Name != podIfName || r.Interfaces[i].Sandbox == "" {
				continue
			}
		}
		if ip4 := ipc.Address.IP.To4(); ip4 != nil {
			v4 = append(v4, ip4)
		} else {
			v6 = append(v6, ipc.Address.IP)
		}
	}
	ips := append(v4, v6...)
	if len(ips) == 0 {
		return nil, fmt.Errorf("the CNI result has no IP address for %s", podIfName)
	}
	return &Result{IPs: ips, Interface: podIfName}, nil
}

// isNetNS tells whether path is still a network namespace (a pinned nsfs
// bind mount or a /proc ns link). The plugins fail DEL on a path that exists
// but is not one (a pin file left behind by a reboot), while they accept ""
// and clean up what lives outside the namespace.
func isNetNS(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC || st.Type == unix.PROC_SUPER_MAGIC
}

// cleanupContext lets cleanup run after the caller's context was canceled
// (a canceled ADD must still be undone), bounded so it cannot hang forever.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
}

// WaitForPlugins waits until no CNI plugin process works for the sandbox
// id (found by the CNI_CONTAINERID in its environment). A daemon killed
// during an ADD leaves its plugins running; a DEL at restart must come
// after them, or a late ADD would leave a veth, an IP lease or a rule
// behind.
func WaitForPlugins(ctx context.Context, id string, limit time.Duration) {
	needle := []byte("CNI_CONTAINERID=" + id + "\x00")
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		busy := false
		procs, _ := os.ReadDir("/proc")
		for _, p := range procs {
			if p.Name()[0] < '0' || p.Name()[0] > '9' {
				continue
			}
			env, err := os.ReadFile(filepath.Join("/proc", p.Name(), "environ"))
			if err == nil && bytes.Contains(env, needle) {
				busy = true
				break
			}
		}
		if !busy {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
