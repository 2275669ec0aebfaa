package validate

import (
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The seeds run in `make test`; `make fuzz` fuzzes each target a while.
// Any input a client can send must give an answer, never a panic.

func FuzzRunPodSandboxRequest(f *testing.F) {
	b, _ := proto.Marshal(&runtimeapi.RunPodSandboxRequest{Config: goodPod()})
	f.Add(b)
	bad := goodPod()
	bad.Metadata.Name = "x\x00"
	bad.Linux.Resources.CpusetCpus = "0-65536,1"
	b, _ = proto.Marshal(&runtimeapi.RunPodSandboxRequest{Config: bad})
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var req runtimeapi.RunPodSandboxRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		if Request(&req) == nil && req.GetConfig() != nil {
			_ = PodSandboxConfig(req.GetConfig())
		}
	})
}

func FuzzCreateContainerRequest(f *testing.F) {
	b, _ := proto.Marshal(&runtimeapi.CreateContainerRequest{PodSandboxId: "p", Config: goodContainer(), SandboxConfig: goodPod()})
	f.Add(b)
	bad := goodContainer()
	bad.LogPath = "a/../../b"
	bad.Linux.Resources.HugepageLimits = []*runtimeapi.HugepageLimit{{PageSize: "B"}}
	b, _ = proto.Marshal(&runtimeapi.CreateContainerRequest{Config: bad})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req runtimeapi.CreateContainerRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		if Request(&req) == nil && req.GetConfig() != nil {
			_ = ContainerConfig(req.GetConfig())
			_ = Resources("linux", req.GetConfig().GetLinux().GetResources())
		}
	})
}

func FuzzCPUList(f *testing.F) {
	for _, s := range []string{"0", "0-3,8", "3-1", "-", ",", "65536", "0-65536", "1,1,1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids, ok := parseList(s)
		if ok && len(ids) == 0 {
			t.Errorf("%q parsed to no ids", s)
		}
		_ = pageSize(s)
	})
}
