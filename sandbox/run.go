package sandbox

import (
	"context"
	"fmt"
	"maps"
	"os"
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
	// Unset options mean the host's user namespace; kubelet sends NODE.
	_, _, err := usernsMappings(opts)
	return err
}

func (m *Manager) run(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (_ string, err error) {
	opts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	hostNetwork := opts.GetNetwork() == runtimeapi.NamespaceMode_NODE
	hostIPC := opts.GetIpc() == runtimeapi.NamespaceMode_NODE
	uids, gids, _ := usernsMappings(opts) // validated
	m.mu.Lock()
	noUserns := m.noUserns
	m.mu.Unlock()
	if uids != nil && noUserns != nil {
		return "", fmt.Errorf("%s: pods cannot have user namespaces of their own on this machine: %v: %w", usernsField, noUserns, errdefs.ErrFailedPrecondition)
	}
	sysctls, err := parseSysctls(cfg.GetLinux().GetSysctls(), hostNetwork, hostIPC)
	if err != nil {
		return "", err
	}
	hostname, err := podHostname(cfg, hostNetwork)
	if err != nil {
		return "", err
	}
	bw, err := network.BandwidthFromAnnotations(cfg.GetAnnotations())
	if err != nil {
		return "", fmt.Errorf("annotations: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	id := newID()
	cgroupPath, err := m.opts.Cgroups.PodPath(cfg.GetLinux().GetCgroupParent(), id)
	if err != nil {
		return "", fmt.Errorf("linux.cgroup_parent: %w", err)
	}

	p := &Pod{
		ID:             id,
		Config:         cfg,
		RuntimeHandler: handler,
		State:          Creating,
		CreatedAt:      time.Now().UnixNano(),
		Namespaces:     map[ns.Type]string{},
		CgroupPath:     cgroupPath,
		Hostname:       hostname,
	}
	// step names a failed step in the error, and logs how long each took:
	// RunPodSandbox latency is a figure husk is measured by.
	last := time.Now()
	step := func(name string, err error) error {
		if err == nil {
			klog.V(4).InfoS("RunPodSandbox step done", "pod", p.key(), "step", name, "took", time.Since(last))
			last = time.Now()
			return nil
		}
		return fmt.Errorf("RunPodSandbox %s/%s: %s: %w", cfg.GetMetadata().GetNamespace(), cfg.GetMetadata().GetName(), name, err)
	}
	for _, d := range []string{m.rootDir(id), m.stateDir(id)} {
		if err := privateDir(d); err != nil {
			return "", step("creating the pod's directories", err)
		}
	}
	// The pod is locked for the whole run: a Stop or Remove that finds it
	// waits until it is made, or undone.
	unlock := m.lockID(id)
	defer unlock()
	// From here on, a crash leaves a record that restore undoes; an error
	// is undone now. Every resource is recorded before it is made.
	if err := m.update(p, nil); err != nil {
		_ = os.RemoveAll(m.rootDir(id))
		_ = os.RemoveAll(m.stateDir(id))
		return "", step("recording the pod", err)
	}
	m.add(p)
	defer func() {
		if err != nil {
			if derr := m.destroy(context.WithoutCancel(ctx), p); derr != nil {
				klog.ErrorS(derr, "Undoing a failed RunPodSandbox", "id", id)
				_ = m.update(p, func(p *Pod) { p.State = NotReady })
				return
			}
			m.forget(p)
		}
	}()

	pins := map[ns.Type]string{}
	if !hostNetwork {
		// The UTS namespace follows the network one, as in kubelet: a
		// host-network pod has the host's hostname.
		pins[ns.Net] = m.nsPath(id, ns.Net)
		pins[ns.UTS] = m.nsPath(id, ns.UTS)
	}
	if !hostIPC {
		pins[ns.IPC] = m.nsPath(id, ns.IPC)
	}
	if len(pins) > 0 {
		userPath := m.nsPath(id, ns.User)
		if err := m.update(p, func(p *Pod) {
			maps.Copy(p.Namespaces, pins)
			if uids != nil {
				p.Namespaces[ns.User] = userPath
			}
		}); err != nil {
			return "", step("recording namespaces", err)
		}
		setup := func() error {
			if !hostNetwork {
				if err := unix.Sethostname([]byte(hostname)); err != nil {
					return fmt.Errorf("setting the hostname: %w", err)
				}
			}
			return applySysctls(sysctls)
		}
		if uids != nil {
			err = ns.PinUser(m.runtimeCommand(context.WithoutCancel(ctx), "hold"), userPath, uids, gids, pins, setup)
		} else {
			err = ns.Pin(pins, setup)
		}
		if err := step("creating namespaces", err); err != nil {
			return "", err
		}
	}

	// CNI takes most of RunPodSandbox's time and needs only the network
	// namespace: it runs while the rest of the pod is made.
	type cniResult struct {
		res *network.Result
		err error
	}
	cniDone := make(chan cniResult, 1)
	if hostNetwork {
		cniDone <- cniResult{res: &network.Result{}}
	} else {
		if err := m.update(p, func(p *Pod) { p.Network = true }); err != nil {
			return "", step("recording the network", err)
		}
		np := m.networkPod(p, bw)
		go func() {
			res, err := m.opts.Network.Setup(ctx, np)
			cniDone <- cniResult{res, err}
		}()
	}
	// Every return from here waits for CNI first: an undo must not race
	// the ADD it undoes.
	var cni *cniResult
	waitCNI := func() cniResult {
		if cni == nil {
			r := <-cniDone
			cni = &r
		}
		return *cni
	}
	defer waitCNI()

	if err := step("creating the pod cgroup", m.opts.Cgroups.Create(cgroupPath, podResources(cfg.GetLinux()))); err != nil {
		return "", err
	}

	resolv, err := resolvConf(cfg.GetDnsConfig())
	if err != nil {
		return "", step("reading the host's resolv.conf", err)
	}
	if err := os.WriteFile(m.FilePath(id, ResolvFile), resolv, 0o644); err != nil {
		return "", step("writing resolv.conf", err)
	}
	if err := step("writing pod files", os.WriteFile(m.FilePath(id, HostnameFile), []byte(hostname+"\n"), 0o644)); err != nil {
		return "", err
	}

	if !hostIPC {
		shm := m.stateDir(id) + "/shm"
		if err := m.update(p, func(p *Pod) { p.Shm = shm }); err != nil {
			return "", step("recording /dev/shm", err)
		}
		if err := os.MkdirAll(shm, 0o755); err != nil {
			return "", step("creating /dev/shm", err)
		}
		if err := step("mounting /dev/shm", unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, fmt.Sprintf("mode=1777,size=%d", shmSize))); err != nil {
			return "", err
		}
	}

	if opts.GetPid() == runtimeapi.NamespaceMode_POD {
		if err := step("starting the pod init", m.startInit(p)); err != nil {
			return "", err
		}
	}

	r := waitCNI()
	if err := step("setting up the network (CNI)", r.err); err != nil {
		return "", err
	}
	var ips []string
	for _, ip := range r.res.IPs {
		ips = append(ips, ip.String())
	}
	hosts, err := hostsFile(hostname, ips, hostNetwork)
	if err != nil {
		return "", step("reading the host's hosts file", err)
	}
	if err := os.WriteFile(m.FilePath(id, HostsFile), hosts, 0o644); err != nil {
		return "", step("writing hosts", err)
	}
	if err := m.update(p, func(p *Pod) { p.IPs, p.State = ips, Ready }); err != nil {
		return "", step("recording the pod ready", err)
	}
	return id, nil
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
