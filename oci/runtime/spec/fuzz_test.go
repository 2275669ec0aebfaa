package spec

import (
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Generate turns a client's ContainerConfig into what the runtime executes:
// no config may make it panic.
func FuzzGenerate(f *testing.F) {
	seed := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Command:  []string{"sh"}, Args: []string{"-c", "true"}, WorkingDir: "/tmp",
		Envs:   []*runtimeapi.KeyValue{{Key: "A", Value: []byte("b")}},
		Mounts: []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/tmp", Readonly: true}},
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 1 << 26, HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 1}}},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				RunAsUsername: "alice", Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}, DropCapabilities: []string{"ALL"}},
				MaskedPaths: []string{"/proc/kcore"}, NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
				Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
			},
		},
	}
	b, _ := proto.Marshal(seed)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := &runtimeapi.ContainerConfig{}
		if proto.Unmarshal(b, cfg) != nil {
			return
		}
		// A Localhost profile is a file the daemon reads: the fuzzer
		// would name /dev/zero. cri/validate and kubelet bound it.
		if sc := cfg.GetLinux().GetSecurityContext(); sc != nil {
			sc.Seccomp, sc.SeccompProfilePath = nil, "" //nolint:staticcheck // older kubelets still send it
		}
		in := baseInput(t)
		in.Config = cfg
		_, _ = Generate(in)
	})
}
