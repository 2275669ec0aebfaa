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

	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/internal/atomicfile"
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

// Process identifies a process across daemon restarts and reboots: a pid,
// and even a pid with its start time, can come again in another boot.
type Process struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
	BootID    string `json:"bootID"`
}

func (p *Pod) key() string { return podKey(p.Config.GetMetadata()) }

// podKey names a pod by its metadata. NUL cannot occur in any of the
// fields, so no two pods share a key.
func podKey(md *runtimeapi.PodSandboxMetadata) string {
	return fmt.Sprintf("%s\x00%s\x00%s\x00%d", md.GetNamespace(), md.GetName(), md.GetUid(), md.GetAttempt())
}

// Ready tells whether the pod can run containers: it is Ready and, when it
// has an init, the init still runs (without it the PID namespace cannot
// take new processes).
func (p *Pod) Ready() bool {
	return p.State == Ready && (p.Init == nil || alive(p.Init))
}

// writeRecord writes a pod's or a container's record (dir/name)
// atomically: a crash of the daemon leaves the old or the new one, and
// writers racing each other each use a temporary file of their own. It does
// not fsync: what a record describes (namespaces, mounts, processes,
// cgroups) does not outlive a power loss either, and records are saved
// several times on the RunPodSandbox and StartContainer paths, whose
// latency counts.
func writeRecord(dir, name string, b []byte) error {
	return atomicfile.Write(filepath.Join(dir, name), b, 0o600, atomicfile.Options{})
}

func (p *Pod) encode() ([]byte, error) {
	raw, err := protojson.Marshal(p.Config)
	if err != nil {
		return nil, err
	}
	c := *p
	c.RawConfig = raw
	return json.Marshal(&c)
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
