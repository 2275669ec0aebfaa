package sandbox

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/network"
	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/runtime/cgroups"
)

// shmSize is the size of a pod's /dev/shm, Docker's and containerd's default.
const shmSize = 64 << 20

// Handlers are the runtime handlers (RuntimeClass) husk knows. "" is the
// built-in runtime.
var Handlers = []string{""}

// Run creates and starts a pod sandbox, as RunPodSandbox. A second call for
// the same pod (name, namespace, uid, attempt) while the first is still
// running waits for it and returns its result; once the pod exists, it is a
// name conflict.
func (m *Manager) Run(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (string, error) {
	if err := validate(cfg, handler); err != nil {
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
	st := &start{done: make(chan struct{})}
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

func validate(cfg *runtimeapi.PodSandboxConfig, handler string) error {
	md := cfg.GetMetadata()
	if md == nil {
		return fmt.Errorf("config.metadata is required: %w", errdefs.ErrInvalidArgument)
	}
	for field, v := range map[string]string{"name": md.GetName(), "namespace": md.GetNamespace(), "uid": md.GetUid()} {
		if v == "" {
			return fmt.Errorf("config.metadata.%s is required: %w", field, errdefs.ErrInvalidArgument)
		}
	}
	known := false
	for _, h := range Handlers {
		known = known || h == handler
	}
	if !known {
		return fmt.Errorf("runtime_handler: %q is not a runtime handler of husk: %w", handler, errdefs.ErrInvalidArgument)
	}
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
	if u := opts.GetUsernsOptions(); u != nil && u.GetMode() == runtimeapi.NamespaceMode_POD {
		return fmt.Errorf("linux.security_context.namespace_options.userns_options: user namespaces are not supported yet: %w", errdefs.ErrNotImplemented)
	}
	return nil
}

func (m *Manager) run(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (_ string, err error) {
	opts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	hostNetwork := opts.GetNetwork() == runtimeapi.NamespaceMode_NODE
	hostIPC := opts.GetIpc() == runtimeapi.NamespaceMode_NODE
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
	for _, d := range []string{m.rootDir(id), m.stateDir(id)} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return "", err
		}
	}
	// From here on, a crash leaves a record that restore undoes; an error
	// is undone now.
	if err := p.save(m.rootDir(id)); err != nil {
		_ = os.RemoveAll(m.rootDir(id))
		_ = os.RemoveAll(m.stateDir(id))
		return "", err
	}
	m.add(p)
	defer func() {
		if err != nil {
			if derr := m.destroy(context.WithoutCancel(ctx), p); derr != nil {
				klog.ErrorS(derr, "Undoing a failed RunPodSandbox", "id", id)
				p.State = NotReady
				_ = p.save(m.rootDir(id))
				return
			}
			m.forget(p)
		}
	}()

	step := func(name string, err error) error {
		if err == nil {
			return nil
		}
		return fmt.Errorf("RunPodSandbox %s: %s: %w", p.key(), name, err)
	}
	res := cgroups.ResourcesFromCRI(cfg.GetLinux().GetResources())
	if res == nil {
		res = cgroups.ResourcesFromCRI(cfg.GetLinux().GetOverhead())
	}
	if err := step("creating the pod cgroup", m.opts.Cgroups.Create(cgroupPath, res)); err != nil {
		return "", err
	}

	resolv, err := resolvConf(cfg.GetDnsConfig())
	if err != nil {
		return "", step("reading the host's resolv.conf", err)
	}
	if err := os.WriteFile(m.FilePath(id, ResolvFile), resolv, 0o644); err != nil {
		return "", step("writing resolv.conf", err)
	}
	if err := os.WriteFile(m.FilePath(id, HostnameFile), []byte(hostname+"\n"), 0o644); err != nil {
		return "", step("writing hostname", err)
	}

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
		// Recorded before they exist, so that an interrupted run is undone.
		p.Namespaces = pins
		if err := p.save(m.rootDir(id)); err != nil {
			return "", err
		}
		err := ns.Pin(pins, func() error {
			if !hostNetwork {
				if err := unix.Sethostname([]byte(hostname)); err != nil {
					return fmt.Errorf("setting the hostname: %w", err)
				}
			}
			return applySysctls(sysctls)
		})
		if err != nil {
			return "", step("creating namespaces", err)
		}
	}

	if !hostIPC {
		shm := m.stateDir(id) + "/shm"
		p.Shm = shm
		if err := p.save(m.rootDir(id)); err != nil {
			return "", err
		}
		if err := os.MkdirAll(shm, 0o755); err != nil {
			return "", step("creating /dev/shm", err)
		}
		if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, fmt.Sprintf("mode=1777,size=%d", shmSize)); err != nil {
			return "", step("mounting /dev/shm", err)
		}
	}

	if opts.GetPid() == runtimeapi.NamespaceMode_POD {
		initCgroup, err := m.opts.Cgroups.ContainerPath(cgroupPath, "init")
		if err == nil {
			err = m.opts.Cgroups.Create(initCgroup, nil)
		}
		if err != nil {
			return "", step("creating the pod init's cgroup", err)
		}
		proc, err := m.startInit(p, initCgroup)
		if err != nil {
			return "", step("starting the pod init", err)
		}
		p.Init = proc
		if err := p.save(m.rootDir(id)); err != nil {
			return "", err
		}
		pidNS := m.nsPath(id, ns.PID)
		if err := ns.PinProcess(proc.PID, ns.PID, pidNS); err != nil {
			return "", step("pinning the PID namespace", err)
		}
		p.Namespaces[ns.PID] = pidNS
	}

	var ips []string
	if !hostNetwork {
		p.Network = true
		if err := p.save(m.rootDir(id)); err != nil {
			return "", err
		}
		result, err := m.opts.Network.Setup(ctx, m.networkPod(p, bw))
		if err != nil {
			return "", step("setting up the network (CNI)", err)
		}
		for _, ip := range result.IPs {
			ips = append(ips, ip.String())
		}
	}
	hosts, err := hostsFile(hostname, ips, hostNetwork)
	if err != nil {
		return "", step("reading the host's hosts file", err)
	}
	if err := os.WriteFile(m.FilePath(id, HostsFile), hosts, 0o644); err != nil {
		return "", step("writing hosts", err)
	}

	m.mu.Lock()
	p.IPs = ips
	p.State = Ready
	m.mu.Unlock()
	if err := p.save(m.rootDir(id)); err != nil {
		return "", err
	}
	return id, nil
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
