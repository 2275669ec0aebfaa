package sandbox

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/nri/pkg/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/sandbox/nri"
)

// SetNRI connects the pods to NRI plugins (nil: none); the daemon calls it
// once NRI has started, before it serves the CRI.
func (m *Manager) SetNRI(n *nri.NRI) { m.nri.Store(n) }

// plugins is NRI, nil when off.
func (m *Manager) plugins() *nri.NRI { return m.nri.Load() }

// NRIBlock holds off a connecting plugin's synchronization until the
// returned function is called: the CRI's calls that change pods or
// containers take it before anything else (nri.NRI.Block).
func (m *Manager) NRIBlock() func() { return m.plugins().Block() }

// nriPod is a pod as NRI plugins see it.
func (m *Manager) nriPod(p *Pod) *api.PodSandbox {
	md := p.Config.GetMetadata()
	out := &api.PodSandbox{
		Id: p.ID, Name: md.GetName(), Uid: md.GetUid(), Namespace: md.GetNamespace(),
		Labels: maps.Clone(p.Config.GetLabels()), Annotations: maps.Clone(p.Config.GetAnnotations()),
		RuntimeHandler: p.RuntimeHandler, Ips: slices.Clone(p.IPs),
		Linux: &api.LinuxPodSandbox{
			CgroupParent: p.Config.GetLinux().GetCgroupParent(),
			CgroupsPath:  p.CgroupPath,
			Resources:    api.FromOCILinuxResources(podResources(p.Config.GetLinux()), nil),
		},
	}
	if p.Init != nil {
		out.Pid = uint32(p.Init.PID)
	}
	for t, path := range p.Namespaces {
		out.Linux.Namespaces = append(out.Linux.Namespaces, &api.LinuxNamespace{Type: string(t), Path: path})
	}
	return out
}

// nriContainer is a container as NRI plugins see it; s is its spec, nil
// when it is not at hand (its bundle is gone).
func (m *Manager) nriContainer(c *Container, s *specs.Spec) *api.Container {
	out := &api.Container{
		Id: c.ID, PodSandboxId: c.PodID, Name: c.Config.GetMetadata().GetName(),
		Labels: maps.Clone(c.Config.GetLabels()), Annotations: maps.Clone(c.Config.GetAnnotations()),
		CreatedAt: c.CreatedAt, StartedAt: c.StartedAt,
		Image: &api.Image{Name: c.Config.GetImage().GetImage()},
	}
	switch c.State {
	case ContainerCreated, ContainerStarting:
		out.State = api.ContainerState_CONTAINER_CREATED
	case ContainerStarted:
		out.State = api.ContainerState_CONTAINER_RUNNING
	case ContainerExited:
		out.State = api.ContainerState_CONTAINER_STOPPED
	}
	if e := c.Exit; e != nil {
		out.FinishedAt, out.ExitCode, out.StatusReason, out.StatusMessage = e.FinishedAt, e.Code, e.Reason, e.Message
	}
	if s == nil {
		return out
	}
	if s.Process != nil {
		out.Args, out.Env = slices.Clone(s.Process.Args), slices.Clone(s.Process.Env)
		out.User = &api.User{Uid: s.Process.User.UID, Gid: s.Process.User.GID, AdditionalGids: slices.Clone(s.Process.User.AdditionalGids)}
		for _, r := range s.Process.Rlimits {
			out.Rlimits = append(out.Rlimits, &api.POSIXRlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
		}
	}
	out.Mounts = api.FromOCIMounts(s.Mounts)
	out.Hooks = api.FromOCIHooks(s.Hooks)
	if l := s.Linux; l != nil {
		out.Linux = &api.LinuxContainer{
			Namespaces:  api.FromOCILinuxNamespaces(l.Namespaces),
			Devices:     api.FromOCILinuxDevices(l.Devices),
			Resources:   api.FromOCILinuxResources(l.Resources, nil),
			CgroupsPath: c.Cgroup,
		}
		if s.Process != nil && s.Process.OOMScoreAdj != nil {
			out.Linux.OomScoreAdj = api.Int(*s.Process.OOMScoreAdj)
		}
	}
	return out
}

// nriObjects are a container and its pod for an event after the fact:
// the container as recorded, its spec if its bundle is still there.
func (m *Manager) nriObjects(id, podID string) (*api.PodSandbox, *api.Container) {
	m.mu.Lock()
	c, p := m.containers[id], m.pods[podID]
	var cc *Container
	if c != nil {
		cc = copyContainer(c)
	}
	var pc *Pod
	if p != nil {
		pc = copyPod(p)
	}
	m.mu.Unlock()
	pod := &api.PodSandbox{Id: podID}
	if pc != nil {
		pod = m.nriPod(pc)
	}
	if cc == nil {
		return pod, &api.Container{Id: id, PodSandboxId: podID}
	}
	s, _ := m.readSpec(id)
	return pod, m.nriContainer(cc, s)
}

// nriStopped tells plugins that a container ended (its exit was read),
// apart from whoever read it: they may hold locks a plugin's answer waits
// for.
func (m *Manager) nriStopped(id, podID string) {
	plugins := m.plugins()
	if plugins == nil {
		return
	}
	go func() {
		pod, ctr := m.nriObjects(id, podID)
		plugins.StopContainer(context.Background(), pod, ctr)
	}()
}

// NRIList is what a newly connected plugin is told of: pods made, and
// containers created or running.
func (m *Manager) NRIList() ([]*api.PodSandbox, []*api.Container) {
	var pods []*api.PodSandbox
	for _, p := range m.List() {
		pods = append(pods, m.nriPod(p))
	}
	var ctrs []*api.Container
	for _, c := range m.ListContainers() {
		if c.State == ContainerExited {
			continue
		}
		s, _ := m.readSpec(c.ID)
		ctrs = append(ctrs, m.nriContainer(c, s))
	}
	return pods, ctrs
}

// NRIUpdate applies a plugin's change of a container's resources, as
// UpdateContainerResources does.
func (m *Manager) NRIUpdate(ctx context.Context, u *api.ContainerUpdate) error {
	res := u.GetLinux().GetResources()
	if res == nil {
		return nil
	}
	c, err := m.GetContainer(u.GetContainerId())
	if err != nil {
		return err
	}
	return m.updateContainerResources(ctx, c.ID, withNRIResources(c.Config.GetLinux().GetResources(), res), false)
}

// nriResources are CRI resources as NRI has them.
func nriResources(r *runtimeapi.LinuxContainerResources) *api.LinuxResources {
	out := &api.LinuxResources{
		Cpu: &api.LinuxCPU{
			Shares: api.UInt64(uint64(r.GetCpuShares())), Quota: api.Int64(r.GetCpuQuota()), Period: api.UInt64(uint64(r.GetCpuPeriod())),
			Cpus: r.GetCpusetCpus(), Mems: r.GetCpusetMems(),
		},
		Memory:  &api.LinuxMemory{Limit: api.Int64(r.GetMemoryLimitInBytes())},
		Unified: maps.Clone(r.GetUnified()),
	}
	if v := r.GetMemorySwapLimitInBytes(); v != 0 {
		out.Memory.Swap = api.Int64(v)
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, &api.HugepageLimit{PageSize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	return out
}

// withNRIResources is r with what NRI's resources set; what NRI does not
// carry (the OOM score) stays as r has it.
func withNRIResources(r *runtimeapi.LinuxContainerResources, n *api.LinuxResources) *runtimeapi.LinuxContainerResources {
	out := &runtimeapi.LinuxContainerResources{}
	if r != nil {
		out = proto.Clone(r).(*runtimeapi.LinuxContainerResources)
	}
	if c := n.GetCpu(); c != nil {
		if v := c.GetShares(); v != nil {
			out.CpuShares = int64(v.GetValue())
		}
		if v := c.GetQuota(); v != nil {
			out.CpuQuota = v.GetValue()
		}
		if v := c.GetPeriod(); v != nil {
			out.CpuPeriod = int64(v.GetValue())
		}
		if c.GetCpus() != "" {
			out.CpusetCpus = c.GetCpus()
		}
		if c.GetMems() != "" {
			out.CpusetMems = c.GetMems()
		}
	}
	if mem := n.GetMemory(); mem != nil {
		if v := mem.GetLimit(); v != nil {
			out.MemoryLimitInBytes = v.GetValue()
		}
		if v := mem.GetSwap(); v != nil {
			out.MemorySwapLimitInBytes = v.GetValue()
		}
	}
	if hl := n.GetHugepageLimits(); len(hl) > 0 {
		out.HugepageLimits = nil
		for _, h := range hl {
			out.HugepageLimits = append(out.HugepageLimits, &runtimeapi.HugepageLimit{PageSize: h.GetPageSize(), Limit: h.GetLimit()})
		}
	}
	for k, v := range n.GetUnified() {
		if out.Unified == nil {
			out.Unified = map[string]string{}
		}
		out.Unified[k] = v
	}
	return out
}

// adjustSpec applies a plugin's adjustment of a container being created
// to its spec. What husk cannot run is refused rather than dropped: a
// plugin's change that did not happen would be worse than none.
func adjustSpec(s *specs.Spec, adj *api.ContainerAdjustment) error {
	if adj == nil {
		return nil
	}
	adjustProcessAndMounts(s, adj)
	if len(adj.GetCDIDevices()) > 0 {
		return refuseAdjustment("CDI devices")
	}
	return adjustLinux(s, adj.GetLinux())
}

func refuseAdjustment(what string) error {
	return fmt.Errorf("an NRI plugin's adjustment of %s, which husk does not apply: %w", what, errdefs.ErrFailedPrecondition)
}

// adjustProcessAndMounts applies what every runtime can: annotations, the
// command, environment, mounts, rlimits and hooks.
func adjustProcessAndMounts(s *specs.Spec, adj *api.ContainerAdjustment) {
	for k, v := range adj.GetAnnotations() {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		if name, ok := strings.CutPrefix(k, "-"); ok {
			delete(s.Annotations, name)
		} else {
			s.Annotations[k] = v
		}
	}
	if len(adj.GetArgs()) > 0 {
		s.Process.Args = slices.Clone(adj.GetArgs())
	}
	for _, kv := range adj.GetEnv() {
		s.Process.Env = adjustEnv(s.Process.Env, kv.GetKey(), kv.GetValue())
	}
	for _, mnt := range adj.GetMounts() {
		dest := strings.TrimPrefix(mnt.GetDestination(), "-")
		s.Mounts = slices.DeleteFunc(s.Mounts, func(o specs.Mount) bool { return o.Destination == dest })
		if strings.HasPrefix(mnt.GetDestination(), "-") {
			continue
		}
		o := mnt.ToOCI(nil)
		if o.Type == "" && (slices.Contains(o.Options, "bind") || slices.Contains(o.Options, "rbind")) {
			o.Type = "bind"
		}
		s.Mounts = append(s.Mounts, o)
	}
	for _, r := range adj.GetRlimits() {
		s.Process.Rlimits = slices.DeleteFunc(s.Process.Rlimits, func(o specs.POSIXRlimit) bool { return o.Type == r.GetType() })
		s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{Type: r.GetType(), Hard: r.GetHard(), Soft: r.GetSoft()})
	}
	if h := adj.GetHooks(); h != nil && len(h.Prestart)+len(h.CreateRuntime)+len(h.CreateContainer)+len(h.StartContainer)+len(h.Poststart)+len(h.Poststop) > 0 {
		if s.Hooks == nil {
			s.Hooks = &specs.Hooks{}
		}
		s.Hooks.Prestart = appendHooks(s.Hooks.Prestart, h.Prestart) //nolint:staticcheck // a hook all the same
		s.Hooks.CreateRuntime = appendHooks(s.Hooks.CreateRuntime, h.CreateRuntime)
		s.Hooks.CreateContainer = appendHooks(s.Hooks.CreateContainer, h.CreateContainer)
		s.Hooks.StartContainer = appendHooks(s.Hooks.StartContainer, h.StartContainer)
		s.Hooks.Poststart = appendHooks(s.Hooks.Poststart, h.Poststart)
		s.Hooks.Poststop = appendHooks(s.Hooks.Poststop, h.Poststop)
	}
}

// adjustLinux applies the Linux part of an adjustment: devices, the OOM
// score and resources; what husk cannot apply is refused.
func adjustLinux(s *specs.Spec, l *api.LinuxContainerAdjustment) error {
	if l == nil {
		return nil
	}
	switch {
	case l.GetCgroupsPath() != "":
		return refuseAdjustment("the cgroup path")
	case len(l.GetNamespaces()) > 0:
		return refuseAdjustment("namespaces")
	case len(l.GetSysctl()) > 0:
		return refuseAdjustment("sysctls")
	case len(l.GetNetDevices()) > 0:
		return refuseAdjustment("network devices")
	// The adaptation hands over empty messages for what no plugin set.
	case proto.Size(l.GetIoPriority()) > 0, proto.Size(l.GetScheduler()) > 0, proto.Size(l.GetRdt()) > 0,
		proto.Size(l.GetMemoryPolicy()) > 0, proto.Size(l.GetSeccompPolicy()) > 0:
		return refuseAdjustment("I/O priority, scheduling, RDT, memory policy or seccomp")
	}
	for _, d := range l.GetDevices() {
		path := strings.TrimPrefix(d.GetPath(), "-")
		s.Linux.Devices = slices.DeleteFunc(s.Linux.Devices, func(o specs.LinuxDevice) bool { return o.Path == path })
		if strings.HasPrefix(d.GetPath(), "-") {
			continue
		}
		dev := d.ToOCI()
		s.Linux.Devices = append(s.Linux.Devices, dev)
		major, minor := dev.Major, dev.Minor
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: dev.Type, Major: &major, Minor: &minor, Access: d.AccessString()})
	}
	if v := l.GetOomScoreAdj(); v != nil {
		adj := int(v.GetValue())
		s.Process.OOMScoreAdj = &adj
	}
	if r := l.GetResources(); r != nil {
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		mergeResources(s.Linux.Resources, r)
	}
	return nil
}

func appendHooks(to []specs.Hook, hs []*api.Hook) []specs.Hook {
	for _, h := range hs {
		to = append(to, h.ToOCI())
	}
	return to
}

// adjustEnv sets (or, for "-NAME", removes) one variable of env.
func adjustEnv(env []string, key, value string) []string {
	name, remove := strings.CutPrefix(key, "-")
	env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, name+"=") })
	if remove {
		return env
	}
	return append(env, name+"="+value)
}

// mergeResources sets what a plugin set of a container's resources.
func mergeResources(to *specs.LinuxResources, r *api.LinuxResources) {
	if c := r.GetCpu(); c != nil {
		if to.CPU == nil {
			to.CPU = &specs.LinuxCPU{}
		}
		if v := c.GetShares(); v != nil {
			x := v.GetValue()
			to.CPU.Shares = &x
		}
		if v := c.GetQuota(); v != nil {
			x := v.GetValue()
			to.CPU.Quota = &x
		}
		if v := c.GetPeriod(); v != nil {
			x := v.GetValue()
			to.CPU.Period = &x
		}
		if c.GetCpus() != "" {
			to.CPU.Cpus = c.GetCpus()
		}
		if c.GetMems() != "" {
			to.CPU.Mems = c.GetMems()
		}
	}
	if mem := r.GetMemory(); mem != nil {
		if to.Memory == nil {
			to.Memory = &specs.LinuxMemory{}
		}
		if v := mem.GetLimit(); v != nil {
			x := v.GetValue()
			to.Memory.Limit = &x
		}
		if v := mem.GetSwap(); v != nil {
			x := v.GetValue()
			to.Memory.Swap = &x
		}
	}
	for _, h := range r.GetHugepageLimits() {
		to.HugepageLimits = slices.DeleteFunc(to.HugepageLimits, func(o specs.LinuxHugepageLimit) bool { return o.Pagesize == h.GetPageSize() })
		to.HugepageLimits = append(to.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	for k, v := range r.GetUnified() {
		if to.Unified == nil {
			to.Unified = map[string]string{}
		}
		to.Unified[k] = v
	}
	if p := r.GetPids(); p != nil {
		x := p.GetLimit()
		to.Pids = &specs.LinuxPids{Limit: &x}
	}
}

// checkNotCreating refuses a pod RunPodSandbox has not finished making.
func (m *Manager) checkNotCreating(podID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p, err := m.findLocked(podID); err == nil && p.State == Creating {
		return fmt.Errorf("pod sandbox %q is still being created: %w", podID, errdefs.ErrNotFound)
	}
	return nil
}

// nriRunPod tells plugins of a pod about to be ready; one that refuses it
// fails RunPodSandbox, and all are told of its end.
func (m *Manager) nriRunPod(ctx context.Context, p *Pod, ips []string) error {
	plugins := m.plugins()
	if plugins == nil {
		return nil
	}
	pod := m.nriPod(copyPod(p))
	pod.Ips = ips
	if err := plugins.RunPodSandbox(ctx, pod); err != nil {
		plugins.RemovePodSandbox(context.WithoutCancel(ctx), pod)
		return fmt.Errorf("NRI plugins refused the pod: %v: %w", err, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// nriCreate asks plugins about a container being created and applies
// their adjustment to its spec.
func (m *Manager) nriCreate(ctx context.Context, c *Container, pod *Pod, s *specs.Spec) error {
	plugins := m.plugins()
	if plugins == nil {
		return nil
	}
	m.mu.Lock()
	cc := copyContainer(c)
	m.mu.Unlock()
	adj, err := plugins.CreateContainer(ctx, m.nriPod(pod), m.nriContainer(cc, s))
	if err != nil {
		return fmt.Errorf("NRI plugins refused the container: %v: %w", err, errdefs.ErrFailedPrecondition)
	}
	return adjustSpec(s, adj)
}

// nriRemoved tells plugins that a container whose creation failed is
// gone (if they were told of it).
func (m *Manager) nriRemoved(c *Container, pod *Pod) {
	plugins := m.plugins()
	if plugins == nil {
		return
	}
	m.mu.Lock()
	cc := copyContainer(c)
	m.mu.Unlock()
	plugins.RemoveContainer(context.Background(), m.nriPod(pod), m.nriContainer(cc, nil))
}
