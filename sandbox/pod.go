// Package sandbox runs pods: the namespaces a pod's containers share (a
// network namespace networked by CNI, IPC, UTS, optionally PID), its cgroup,
// and the files its containers mount (hostname, hosts, resolv.conf, /dev/shm).
//
// Every pod is recorded in <root>/pods/<id>/pod.json before anything is
// made for it and after every change of state, so that a daemon that dies
// at any moment finds each pod again and can finish or undo what was begun.
package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/network/ns"
)

// State is a pod's lifecycle state.
type State string

const (
	// Creating: RunPodSandbox has begun and not finished. A pod found in
	// this state after a restart is undone and forgotten: kubelet never got
	// its id and retries.
	Creating State = "creating"
	// Ready: running, with its namespaces and network.
	Ready State = "ready"
	// NotReady: stopped; its network and namespaces are gone. Only removal
	// follows.
	NotReady State = "notready"
)

// Pod is one pod sandbox.
type Pod struct {
	ID             string                       `json:"id"`
	Config         *runtimeapi.PodSandboxConfig `json:"-"`
	RawConfig      json.RawMessage              `json:"config"`
	RuntimeHandler string                       `json:"runtimeHandler,omitempty"`
	State          State                        `json:"state"`
	CreatedAt      int64                        `json:"createdAt"`
	IPs            []string                     `json:"ips,omitempty"`
	Namespaces     map[ns.Type]string           `json:"namespaces,omitempty"` // pinned files; absent for host namespaces
	CgroupPath     string                       `json:"cgroupPath"`
	Network        bool                         `json:"network"` // CNI ADD done and not yet undone
	Shm            string                       `json:"shm,omitempty"`
	Init           *Process                     `json:"init,omitempty"`
	Hostname       string                       `json:"hostname"`
}

// Process identifies a process across daemon restarts: a pid alone could
// have been reused.
type Process struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
}

func (p *Pod) key() string { return podKey(p.Config.GetMetadata()) }

func podKey(md *runtimeapi.PodSandboxMetadata) string {
	return fmt.Sprintf("%s/%s/%s/%d", md.GetNamespace(), md.GetName(), md.GetUid(), md.GetAttempt())
}

// HostNetwork tells whether the pod uses the host's network namespace.
func (p *Pod) HostNetwork() bool {
	return p.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
}

// save writes pod.json atomically: a crash leaves the old or the new one.
func (p *Pod) save(dir string) error {
	raw, err := protojson.Marshal(p.Config)
	if err != nil {
		return err
	}
	p.RawConfig = raw
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(filepath.Join(dir, "pod.json"), b, 0o600); err != nil {
		return fmt.Errorf("saving pod %s: %w", p.ID, err)
	}
	return nil
}

func loadPod(dir string) (*Pod, error) {
	b, err := os.ReadFile(filepath.Join(dir, "pod.json"))
	if err != nil {
		return nil, err
	}
	var p Pod
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	p.Config = &runtimeapi.PodSandboxConfig{}
	if err := protojson.Unmarshal(p.RawConfig, p.Config); err != nil {
		return nil, err
	}
	if p.ID == "" || p.ID != filepath.Base(dir) {
		return nil, fmt.Errorf("pod record in %s names pod %q", dir, p.ID)
	}
	return &p, nil
}

// copyPod is what callers outside the manager's lock get.
func copyPod(p *Pod) *Pod {
	c := *p
	c.IPs = append([]string(nil), p.IPs...)
	c.Namespaces = make(map[ns.Type]string, len(p.Namespaces))
	for k, v := range p.Namespaces {
		c.Namespaces[k] = v
	}
	if p.Init != nil {
		i := *p.Init
		c.Init = &i
	}
	return &c
}
