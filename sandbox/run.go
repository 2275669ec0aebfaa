package sandbox

import (
	"context"
	"fmt"
	"maps"
	"os"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/network"
	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/runtime/cgroups"
	"github.com/husk-runtime/husk/oci/runtime/spec"
)

// shmSize is the size of a pod's /dev/shm, Docker's and containerd's default.
const shmSize = 64 << 20

// Run creates and starts a pod sandbox, as RunPodSandbox. A second call for
// the same pod (name, namespace, uid, attempt) while the first is still
// running waits for it and returns its result; once the pod exists, it is a
// name conflict.
func (m *Manager) Run(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (string, error) {
	if err := validate(cfg); err != nil {
		return "", err
	}
	uids, _, _ := usernsMappings(cfg.GetLinux().GetSecurityContext().GetNamespaceOptions())
	if err := m.checkHandler(handler, uids != nil); err != nil {
		return "", err
	}
	key := podKey(cfg.GetMetadata())
	m.mu.Lock()
	if st, ok := m.starts[key]; ok {
		m.mu.Unlock()
		select {
		case <-st.done:
			return st.id, st.err
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if id, ok := m.names[key]; ok {
		m.mu.Unlock()
		return "", fmt.Errorf("pod sandbox %s already exists as %s: %w", key, id, errdefs.ErrAlreadyExists)
	}
	size := podListSize(cfg)
	if err := m.checkBudgetLocked(size); err != nil {
		m.mu.Unlock()
		return "", err
	}
	st := &start{done: make(chan struct{}), size: size}
	m.starts[key] = st
	m.mu.Unlock()

	// The work is not tied to the caller: a kubelet that times out retries,
	// and then joins this run instead of racing a teardown.
	st.id, st.err = m.run(context.WithoutCancel(ctx), cfg, handler)
	m.mu.Lock()
	delete(m.starts, key)
	m.mu.Unlock()
	close(st.done)
	return st.id, st.err
}

// validate checks what cri/validate does not: the rules of the pod's own
// parts (DNS, ports, namespaces).
func validate(cfg *runtimeapi.PodSandboxConfig) error {
	if err := validateDNS(cfg.GetDnsConfig()); err != nil {
		return err
	}
	for i, pm := range cfg.GetPortMappings() {
		if pm.GetContainerPort() <= 0 || pm.GetContainerPort() > 65535 || pm.GetHostPort() < 0 || pm.GetHostPort() > 65535 {
			return fmt.Errorf("port_mappings[%d]: ports must be in 1-65535: %w", i, errdefs.ErrInvalidArgument)
		}
	}
	opts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if opts.GetPid() == runtimeapi.NamespaceMode_TARGET {
		return fmt.Errorf("linux.security_context.namespace_options.pid: TARGET is for containers, not pods: %w", errdefs.ErrInvalidArgument)
	}
	if err := spec.CheckSELinux("linux.security_context.selinux_options", cfg.GetLinux().GetSecurityContext().GetSelinuxOptions()); err != nil {
		return err
	}
	// Unset options mean the host's user namespace; kubelet sends NODE.
	_, _, err := usernsMappings(opts)
	return err
}

// podPlan is what a pod's config asks of RunPodSandbox, checked before
// anything is made.
type podPlan struct {
	hostNetwork, hostIPC bool
	uids, gids           []syscall.SysProcIDMap // the pod's own user namespace; nil for the host's
	sysctls              []sysctl
	hostname             string
	bandwidth            *network.Bandwidth
}

func (m *Manager) planPod(cfg *runtimeapi.PodSandboxConfig) (*podPlan, error) {
	opts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	pl := &podPlan{
		hostNetwork: opts.GetNetwork() == runtimeapi.NamespaceMode_NODE,
		hostIPC:     opts.GetIpc() == runtimeapi.NamespaceMode_NODE,
	}
	pl.uids, pl.gids, _ = usernsMappings(opts) // validated
	m.mu.Lock()
	noUserns := m.noUserns
	m.mu.Unlock()
	if pl.uids != nil && noUserns != nil {
		return nil, fmt.Errorf("%s: pods cannot have user namespaces of their own on this machine: %v: %w", usernsField, noUserns, errdefs.ErrFailedPrecondition)
	}
	var err error
	if pl.sysctls, err = parseSysctls(cfg.GetLinux().GetSysctls(), pl.hostNetwork, pl.hostIPC); err != nil {
		return nil, err
	}
	if pl.hostname, err = podHostname(cfg, pl.hostNetwork); err != nil {
		return nil, err
	}
	if pl.bandwidth, err = network.BandwidthFromAnnotations(cfg.GetAnnotations()); err != nil {
		return nil, fmt.Errorf("annotations: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return pl, nil
}

// newPod is the record of a pod about to be made: its id and cgroup.
func (m *Manager) newPod(cfg *runtimeapi.PodSandboxConfig, handler string, pl *podPlan) (*Pod, error) {
	id := newID()
	cgroupPath, err := m.opts.Cgroups.PodPath(cfg.GetLinux().GetCgroupParent(), id)
	if err != nil {
		return nil, fmt.Errorf("linux.cgroup_parent: %w", err)
	}
	return &Pod{
		ID:             id,
		Config:         cfg,
		RuntimeHandler: handler,
		State:          Creating,
		CreatedAt:      time.Now().UnixNano(),
		Namespaces:     map[ns.Type]string{},
		CgroupPath:     cgroupPath,
		Hostname:       pl.hostname,
	}, nil
}

func (m *Manager) run(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (_ string, err error) {
	pl, err := m.planPod(cfg)
	if err != nil {
		return "", err
	}
	p, err := m.newPod(cfg, handler, pl)
	if err != nil {
		return "", err
	}
	st := newSteps(ctx, "RunPodSandbox", cfg.GetMetadata().GetNamespace()+"/"+cfg.GetMetadata().GetName(), "pod", p.key())
	// The pod is locked for the whole run: a Stop or Remove that finds it
	// waits until it is made, or undone.
	unlock := m.lockID(p.ID)
	defer unlock()
	if err := m.recordPod(p, st); err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			m.undoRun(ctx, p)
		}
	}()

	if err := m.pinNamespaces(ctx, p, pl, st); err != nil {
		return "", err
	}
	// CNI takes most of RunPodSandbox's time and needs only the network
	// namespace: it runs while the rest of the pod is made. Every return
	// from here waits for it first: an undo must not race the ADD it
	// undoes.
	waitCNI, err := m.startNetwork(ctx, p, pl, st)
	if err != nil {
		return "", err
	}
	defer func() { _, _ = waitCNI() }()
	if err := st.done("creating the pod cgroup", m.opts.Cgroups.Create(p.CgroupPath, podResources(cfg.GetLinux()))); err != nil {
		return "", err
	}
	if err := m.writePodFiles(p, st); err != nil {
		return "", err
	}
	if !pl.hostIPC {
		if err := m.mountShm(p, st); err != nil {
			return "", err
		}
	}
	if cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() == runtimeapi.NamespaceMode_POD {
		if err := st.done("starting the pod init", m.startInit(p)); err != nil {
			return "", err
		}
	}
	res, err := waitCNI()
	if err := st.done("setting up the network (CNI)", err); err != nil {
		return "", err
	}
	ips, err := m.writeHosts(p, pl, res, st)
	if err != nil {
		return "", err
	}
	if err := st.done("telling NRI plugins (RunPodSandbox)", m.nriRunPod(ctx, p, ips)); err != nil {
		return "", err
	}
	if err := m.update(p, func(p *Pod) { p.IPs, p.State = ips, Ready }); err != nil {
		return "", st.done("recording the pod ready", err)
	}
	// A pod's own events, as containerd sends them for its sandbox.
	m.emit(EventCreated, p.ID, p.ID)
	m.emit(EventStarted, p.ID, p.ID)
	return p.ID, nil
}

// recordPod makes a new pod's directories and writes its first record:
// from here on, a crash leaves a record that restore undoes, and an error
// is undone from it (undoRun). Every resource is recorded before it is
// made.
func (m *Manager) recordPod(p *Pod, st *steps) error {
	for _, d := range []string{m.rootDir(p.ID), m.stateDir(p.ID)} {
		if err := privateDir(d); err != nil {
			_ = os.RemoveAll(m.rootDir(p.ID))
			_ = os.RemoveAll(m.stateDir(p.ID))
			return st.done("creating the pod's directories", err)
		}
	}
	if err := m.update(p, nil); err != nil {
		_ = os.RemoveAll(m.rootDir(p.ID))
		_ = os.RemoveAll(m.stateDir(p.ID))
		return st.done("recording the pod", err)
	}
	m.add(p)
	return nil
}

// undoRun destroys what a failed RunPodSandbox made. Should that fail too,
// the pod stays, not ready, for StopPodSandbox and RemovePodSandbox to
// finish.
func (m *Manager) undoRun(ctx context.Context, p *Pod) {
	if err := m.destroy(context.WithoutCancel(ctx), p); err != nil {
		klog.ErrorS(err, "Undoing a failed RunPodSandbox", "id", p.ID)
		_ = m.update(p, func(p *Pod) { p.State = NotReady })
		return
	}
	m.forget(p)
}

// pinNamespaces makes the pod's network, UTS and IPC namespaces (those it
// does not share with the host), in its own user namespace if it has one,
// with its hostname and sysctls set, and pins them on files.
func (m *Manager) pinNamespaces(ctx context.Context, p *Pod, pl *podPlan, st *steps) error {
	pins := map[ns.Type]string{}
	if !pl.hostNetwork {
		// The UTS namespace follows the network one, as in kubelet: a
		// host-network pod has the host's hostname.
		pins[ns.Net] = m.nsPath(p.ID, ns.Net)
		pins[ns.UTS] = m.nsPath(p.ID, ns.UTS)
	}
	if !pl.hostIPC {
		pins[ns.IPC] = m.nsPath(p.ID, ns.IPC)
	}
	if len(pins) == 0 {
		return nil
	}
	userPath := m.nsPath(p.ID, ns.User)
	if err := m.update(p, func(p *Pod) {
		maps.Copy(p.Namespaces, pins)
		if pl.uids != nil {
			p.Namespaces[ns.User] = userPath
		}
	}); err != nil {
		return st.done("recording namespaces", err)
	}
	setup := func() error {
		if !pl.hostNetwork {
			if err := unix.Sethostname([]byte(pl.hostname)); err != nil {
				return fmt.Errorf("setting the hostname: %w", err)
			}
		}
		return applySysctls(pl.sysctls)
	}
	var err error
	if pl.uids != nil {
		err = ns.PinUser(m.runtimeCommand(context.WithoutCancel(ctx), "hold"), userPath, pl.uids, pl.gids, pins, setup)
	} else {
		err = ns.Pin(pins, setup)
	}
	return st.done("creating namespaces", err)
}

// startNetwork starts CNI's ADD for the pod, unless it has the host's
// network; wait returns its result, once it is there (every call the same).
func (m *Manager) startNetwork(ctx context.Context, p *Pod, pl *podPlan, st *steps) (wait func() (*network.Result, error), err error) {
	type result struct {
		res *network.Result
		err error
	}
	done := make(chan result, 1)
	if pl.hostNetwork {
		done <- result{res: &network.Result{}}
	} else {
		if err := m.update(p, func(p *Pod) { p.Network = true }); err != nil {
			return nil, st.done("recording the network", err)
		}
		np := m.networkPod(p, pl.bandwidth)
		go func() {
			res, err := m.opts.Network.Setup(ctx, np)
			done <- result{res, err}
		}()
	}
	var got *result
	return func() (*network.Result, error) {
		if got == nil {
			r := <-done
			got = &r
		}
		return got.res, got.err
	}, nil
}

// writePodFiles writes the pod's resolv.conf and hostname, which its
// containers mount.
func (m *Manager) writePodFiles(p *Pod, st *steps) error {
	resolv, err := resolvConf(p.Config.GetDnsConfig())
	if err != nil {
		return st.done("reading the host's resolv.conf", err)
	}
	if err := os.WriteFile(m.FilePath(p.ID, ResolvFile), resolv, 0o644); err != nil {
		return st.done("writing resolv.conf", err)
	}
	return st.done("writing pod files", os.WriteFile(m.FilePath(p.ID, HostnameFile), []byte(p.Hostname+"\n"), 0o644))
}

// writeHosts writes the pod's hosts file, with the addresses CNI gave it,
// and returns them.
func (m *Manager) writeHosts(p *Pod, pl *podPlan, res *network.Result, st *steps) ([]string, error) {
	var ips []string
	for _, ip := range res.IPs {
		ips = append(ips, ip.String())
	}
	hosts, err := hostsFile(pl.hostname, ips, pl.hostNetwork)
	if err != nil {
		return nil, st.done("reading the host's hosts file", err)
	}
	if err := os.WriteFile(m.FilePath(p.ID, HostsFile), hosts, 0o644); err != nil {
		return nil, st.done("writing hosts", err)
	}
	return ips, nil
}

// mountShm mounts the pod's /dev/shm, a tmpfs its containers share.
func (m *Manager) mountShm(p *Pod, st *steps) error {
	shm := m.stateDir(p.ID) + "/shm"
	if err := m.update(p, func(p *Pod) { p.Shm = shm }); err != nil {
		return st.done("recording /dev/shm", err)
	}
	if err := os.MkdirAll(shm, 0o755); err != nil {
		return st.done("creating /dev/shm", err)
	}
	return st.done("mounting /dev/shm", unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, fmt.Sprintf("mode=1777,size=%d", shmSize)))
}

// podResources is what the pod cgroup is limited to: kubelet sends the sum
// of its containers' resources and, apart, the pod's overhead, which the
// pod's own processes (the init, the runtime's share) are charged against.
//
// Under a cgroup_parent, none: kubelet's pod cgroup, the parent, enforces
// the pod's limits already, and it sends the sum for information (the sum
// of the limits declared; a container without a limit is left out of it).
// Limits here too would hold such a container to the others' sum, and a
// resize up would be refused (the kernel will not let a child's CPU quota
// pass its parent's, which kubelet raises after telling the runtime).
func podResources(l *runtimeapi.LinuxPodSandboxConfig) *specs.LinuxResources {
	if l.GetCgroupParent() != "" {
		return nil
	}
	r, o := l.GetResources(), l.GetOverhead()
	if r == nil || o == nil {
		if r == nil {
			r = o
		}
		return cgroups.ResourcesFromCRI(r)
	}
	sum := proto.Clone(r).(*runtimeapi.LinuxContainerResources)
	if sum.MemoryLimitInBytes > 0 && o.MemoryLimitInBytes > 0 {
		sum.MemoryLimitInBytes += o.MemoryLimitInBytes
	}
	if sum.CpuQuota > 0 && o.CpuQuota > 0 && sum.CpuPeriod == o.CpuPeriod {
		sum.CpuQuota += o.CpuQuota
	}
	if sum.CpuShares > 0 {
		sum.CpuShares += o.CpuShares
	}
	return cgroups.ResourcesFromCRI(sum)
}

func (m *Manager) networkPod(p *Pod, bw *network.Bandwidth) network.Pod {
	md := p.Config.GetMetadata()
	np := network.Pod{
		ID:        p.ID,
		NetNS:     p.Namespaces[ns.Net],
		Name:      md.GetName(),
		Namespace: md.GetNamespace(),
		UID:       md.GetUid(),
		Bandwidth: bw,
	}
	if np.NetNS != "" && !ns.IsPinned(np.NetNS) {
		np.NetNS = "" // CNI DEL without a namespace still frees the IP and rules
	}
	for _, pm := range p.Config.GetPortMappings() {
		proto := "tcp"
		switch pm.GetProtocol() {
		case runtimeapi.Protocol_UDP:
			proto = "udp"
		case runtimeapi.Protocol_SCTP:
			proto = "sctp"
		}
		if pm.GetHostPort() == 0 {
			continue // no host port: nothing for portmap to do
		}
		np.PortMappings = append(np.PortMappings, network.PortMapping{
			Protocol: proto, ContainerPort: pm.GetContainerPort(), HostPort: pm.GetHostPort(), HostIP: pm.GetHostIp(),
		})
	}
	return np
}
