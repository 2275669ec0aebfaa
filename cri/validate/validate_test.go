package validate

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func goodPod() *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "PodSandbox-for-test.a1", Namespace: "kube-system", Uid: "4e3a1c2b-0d7e-4c9a-9c1e-2d1f3a4b5c6d", Attempt: 3},
		LogDirectory: "/var/log/pods/kube-system_web_4e3a",
		Labels:       map[string]string{"app": "web"},
		PortMappings: []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 8080, HostIp: "127.0.0.1"}},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: "/kubepods/besteffort/pod4e3a",
			Sysctls:      map[string]string{"net.ipv4.ip_forward": "1"},
			Resources:    &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 64 << 20},
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				RunAsUser:          &runtimeapi.Int64Value{Value: 1000},
				SupplementalGroups: []int64{1, 2},
				Seccomp:            &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/var/lib/kubelet/seccomp/p.json"},
			},
		},
	}
}

func goodContainer() *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "container-with-SupplementalGroupsPolicyMerge-4e3a1c2b-0d7e-4c9a-9c1e-2d1f3a4b5c6d"},
		Image:    &runtimeapi.ImageSpec{Image: "busybox"},
		Command:  []string{"sh", "-c", "sleep 1"},
		Envs:     []*runtimeapi.KeyValue{{Key: "A", Value: []byte("b=c")}},
		LogPath:  "web/0.log",
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{CpusetCpus: "0", CpuQuota: -1, OomScoreAdj: 1000},
		},
	}
}

// Every case changes one field of a good config and must be refused with
// an InvalidArgument naming that field.
func TestBadPodSandboxConfigsNameTheirField(t *testing.T) {
	if err := PodSandboxConfig(goodPod()); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	for _, c := range []struct {
		field  string
		change func(*runtimeapi.PodSandboxConfig)
	}{
		{"config.metadata", func(p *runtimeapi.PodSandboxConfig) { p.Metadata = nil }},
		{"config.metadata.name", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Name = strings.Repeat("a", 1<<20) }},
		{"config.metadata.name", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Name = "web\x00" }},
		{"config.metadata.name", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Name = "web\n" }},
		{"config.metadata.name", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Name = "-web" }},
		{"config.metadata.name", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Name = "a..b" }},
		{"config.metadata.name", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Name = "" }},
		{"config.metadata.namespace", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Namespace = strings.Repeat("n", 64) }},
		{"config.metadata.namespace", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Namespace = "a.b" }},
		{"config.metadata.uid", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Uid = strings.Repeat("u", 129) }},
		{"config.metadata.uid", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Uid = "a/b" }},
		{"config.labels", func(p *runtimeapi.PodSandboxConfig) { p.Labels = map[string]string{"big": strings.Repeat("v", 8<<20)} }},
		{"config.labels", func(p *runtimeapi.PodSandboxConfig) { p.Labels = map[string]string{"": "v"} }},
		{"config.annotations", func(p *runtimeapi.PodSandboxConfig) {
			p.Annotations = map[string]string{"big": strings.Repeat("v", 9<<20)}
		}},
		{"config.log_directory", func(p *runtimeapi.PodSandboxConfig) { p.LogDirectory = "relative/logs" }},
		{"config.log_directory", func(p *runtimeapi.PodSandboxConfig) { p.LogDirectory = "/var/log/../etc" }},
		{"config.port_mappings[0].host_ip", func(p *runtimeapi.PodSandboxConfig) { p.PortMappings[0].HostIp = "not-an-ip" }},
		{"config.linux.cgroup_parent", func(p *runtimeapi.PodSandboxConfig) { p.Linux.CgroupParent = "/kubepods\n/x" }},
		{"config.linux.sysctls[net.ipv4.ip_forward]", func(p *runtimeapi.PodSandboxConfig) { p.Linux.Sysctls["net.ipv4.ip_forward"] = "1\n0" }},
		{"config.linux.resources.memory_limit_in_bytes", func(p *runtimeapi.PodSandboxConfig) { p.Linux.Resources.MemoryLimitInBytes = -5 }},
		{"config.linux.resources.cpu_period", func(p *runtimeapi.PodSandboxConfig) { p.Linux.Resources.CpuPeriod = 5 }},
		{"config.linux.overhead.cpu_shares", func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.Overhead = &runtimeapi.LinuxContainerResources{CpuShares: -2}
		}},
		{"config.linux.security_context.supplemental_groups", func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.SecurityContext.SupplementalGroups = make([]int64, 70000)
		}},
		{"config.linux.security_context.run_as_user", func(p *runtimeapi.PodSandboxConfig) { p.Linux.SecurityContext.RunAsUser.Value = -1 }},
		{"config.linux.security_context.seccomp.localhost_ref", func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.SecurityContext.Seccomp.LocalhostRef = "/var/lib/kubelet/seccomp/../../../../etc/shadow"
		}},
	} {
		p := goodPod()
		c.change(p)
		err := Request(&runtimeapi.RunPodSandboxRequest{Config: p})
		if err == nil {
			err = PodSandboxConfig(p)
		}
		checkRefusal(t, err, c.field)
	}
}

func TestBadContainerConfigsNameTheirField(t *testing.T) {
	if err := ContainerConfig(goodContainer()); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	for _, c := range []struct {
		field  string
		change func(*runtimeapi.ContainerConfig)
	}{
		{"config.metadata.name", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "a b" }},
		{"config.metadata.name", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = strings.Repeat("c", 254) }},
		{"config.image.image", func(c *runtimeapi.ContainerConfig) { c.Image = nil }},
		{"config.command[1]", func(c *runtimeapi.ContainerConfig) { c.Command[1] = strings.Repeat("x", 4<<20) }},
		{"config.command", func(c *runtimeapi.ContainerConfig) {
			for range 21 {
				c.Args = append(c.Args, strings.Repeat("x", 100<<10))
			}
		}},
		{"config.envs[0].value", func(c *runtimeapi.ContainerConfig) { c.Envs[0].Value = []byte("a\x00b") }},
		{"config.envs[0].key", func(c *runtimeapi.ContainerConfig) { c.Envs[0].Key = "A=B" }},
		{"config.log_path", func(c *runtimeapi.ContainerConfig) { c.LogPath = "../../escape.log" }},
		{"config.log_path", func(c *runtimeapi.ContainerConfig) { c.LogPath = "/etc/shadow" }},
		{"config.log_path", func(c *runtimeapi.ContainerConfig) { c.LogPath = "web/../../x.log" }},
		{"config.linux.resources.cpu_period", func(c *runtimeapi.ContainerConfig) { c.Linux.Resources.CpuPeriod = 1 }},
		{"config.linux.resources.cpuset_cpus", func(c *runtimeapi.ContainerConfig) { c.Linux.Resources.CpusetCpus = "99999" }},
		{"config.linux.resources.cpuset_cpus", func(c *runtimeapi.ContainerConfig) { c.Linux.Resources.CpusetCpus = "3-1" }},
		{"config.linux.resources.cpuset_mems", func(c *runtimeapi.ContainerConfig) { c.Linux.Resources.CpusetMems = "4096" }},
		{"config.linux.resources.memory_swap_limit_in_bytes", func(c *runtimeapi.ContainerConfig) { c.Linux.Resources.MemorySwapLimitInBytes = -2 }},
		{"config.linux.resources.cpu_quota", func(c *runtimeapi.ContainerConfig) { c.Linux.Resources.CpuQuota = 500 }},
		{"config.linux.resources.cpuset_cpus", func(c *runtimeapi.ContainerConfig) {
			c.Linux.Resources.CpusetCpus = strings.Repeat("0-65536,", 600) + "0"
		}},
		{"config.linux.resources.oom_score_adj", func(c *runtimeapi.ContainerConfig) { c.Linux.Resources.OomScoreAdj = 1001 }},
		{"config.linux.resources.hugepage_limits[0].page_size", func(c *runtimeapi.ContainerConfig) {
			c.Linux.Resources.HugepageLimits = []*runtimeapi.HugepageLimit{{PageSize: "../2MB"}}
		}},
		{"config.linux.security_context.seccomp_profile_path", func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "localhost/../x"}
		}},
		{"config.linux.security_context.namespace_options.pid", func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: 42}}
		}},
	} {
		cfg := goodContainer()
		c.change(cfg)
		err := Request(&runtimeapi.CreateContainerRequest{Config: cfg})
		if err == nil {
			err = ContainerConfig(cfg)
		}
		checkRefusal(t, err, c.field)
	}
}

// kubelet sends a pod's quota less its overhead's: below 1000, or
// negative without CFS quotas. A container's -1 swap is unlimited.
func TestWhatKubeletSendsIsTaken(t *testing.T) {
	for _, q := range []int64{500, 0, -1, -1001} {
		p := goodPod()
		p.Linux.Resources.CpuQuota = q
		if err := PodSandboxConfig(p); err != nil {
			t.Errorf("pod cpu_quota %d: %v", q, err)
		}
		if err := PodResources("resources", p.Linux.Resources); err != nil {
			t.Errorf("UpdatePodSandboxResources cpu_quota %d: %v", q, err)
		}
	}
	c := goodContainer()
	c.Linux.Resources.MemorySwapLimitInBytes = -1
	if err := ContainerConfig(c); err != nil {
		t.Errorf("swap -1: %v", err)
	}
}

func TestEnumsOutOfRangeAreRefused(t *testing.T) {
	p := goodPod()
	p.PortMappings[0].Protocol = 99
	checkRefusal(t, Request(&runtimeapi.RunPodSandboxRequest{Config: p}), "config.port_mappings[0].protocol")
	p = goodPod()
	p.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Network: 42}
	checkRefusal(t, Request(&runtimeapi.RunPodSandboxRequest{Config: p}), "config.linux.security_context.namespace_options.network")
	checkRefusal(t, Request(&runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: -3}}}), "filter.state.state")
	checkRefusal(t, Request(&runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Annotations: map[string]string{"k\x00": "v"}}}), "config.annotations")
	if err := Request(&runtimeapi.RunPodSandboxRequest{Config: goodPod()}); err != nil {
		t.Errorf("a good request: %v", err)
	}
}

func checkRefusal(t *testing.T, err error, field string) {
	t.Helper()
	if !errdefs.IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), field) {
		t.Errorf("want InvalidArgument naming %s, got %v", field, err)
	}
	if err != nil && len(err.Error()) > 1024 {
		t.Errorf("error for %s is %d bytes long", field, len(err.Error()))
	}
}
