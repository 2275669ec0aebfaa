package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// ContainerState is where a container is in its life.
type ContainerState string

const (
	// ContainerCreating: CreateContainer has begun and not finished; after
	// a restart such a container is undone.
	ContainerCreating ContainerState = "creating"
	ContainerCreated  ContainerState = "created"
	// ContainerStarting: StartContainer is starting its monitor. After a
	// restart, the monitor's own file tells whether it got that far.
	ContainerStarting ContainerState = "starting"
	// ContainerStarted: its monitor was started; whether it still runs is
	// read from the monitor's files.
	ContainerStarted ContainerState = "started"
	ContainerExited  ContainerState = "exited"
)

// Container is one container of a pod.
type Container struct {
	ID        string                      `json:"id"`
	PodID     string                      `json:"podID"`
	Config    *runtimeapi.ContainerConfig `json:"-"`
	RawConfig json.RawMessage             `json:"config"`
	ImageID   string                      `json:"imageID"`
	Layers    []digest.Digest             `json:"layers"`
	State     ContainerState              `json:"state"`
	CreatedAt int64                       `json:"createdAt"`
	StartedAt int64                       `json:"startedAt,omitempty"`
	LogPath   string                      `json:"logPath,omitempty"`
	// LogDir is the pod's log_directory that LogPath is below.
	LogDir  string   `json:"logDir,omitempty"`
	Cgroup  string   `json:"cgroup"`
	Rootfs  string   `json:"rootfs,omitempty"` // the overlay's mount point, recorded before it is mounted
	Monitor *Process `json:"monitor,omitempty"`
	StopSig int      `json:"stopSignal"`
	Exit    *Exit    `json:"exit,omitempty"`
	// ImageVolumes are its mounts of images, recorded before each is made.
	ImageVolumes []ImageVolume `json:"imageVolumes,omitempty"`
	// User is who its first process starts as (ContainerStatus.user).
	User *User `json:"user,omitempty"`
	// Restore is the checkpoint a container made from one is restored
	// from at start (checkpoint_restore.go): unpacked or copied into its
	// directory, or a pod checkpoint's directory, which is only read.
	Restore string `json:"restore,omitempty"`
	// StartPending: Started is recorded (the monitor runs, and a daemon
	// that dies now finds it) but StartContainer has not returned, and
	// the runtime may still fail to run the command: the CRI reports the
	// container as created until it has.
	StartPending bool `json:"-"`

	// exitWatched: the exit watch is on the container's directory.
	// listed: its monitor is watched too (exitwatch.go), so that a list
	// can take State as recorded until either watch fires.
	exitWatched, listed bool

	// writeMu orders the writes of the record: the last one written holds
	// the latest state. gone is set once the container's files are removed.
	writeMu sync.Mutex
	gone    bool
}

// ImageVolume is an image mounted for a container (a CRI mount with an
// image): a read-only overlay of the image's layers.
type ImageVolume struct {
	Mount   int             `json:"mount"` // index in the config's mounts
	Path    string          `json:"path"`  // the overlay's mount point
	ImageID string          `json:"imageID"`
	Layers  []digest.Digest `json:"layers"`
}

// User is a process's identity: uid, gid and supplementary groups.
type User struct {
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"`
}

// Exit is how a container ended.
type Exit struct {
	Code       int32  `json:"code"`
	FinishedAt int64  `json:"finishedAt"`
	Reason     string `json:"reason"`
	Message    string `json:"message,omitempty"`
}

func (c *Container) encode() ([]byte, error) {
	raw, err := protojson.Marshal(c.Config)
	if err != nil {
		return nil, err
	}
	cp := copyContainer(c)
	cp.RawConfig = raw
	return json.Marshal(cp)
}

func loadContainer(dir string) (*Container, error) {
	b, err := os.ReadFile(filepath.Join(dir, "container.json"))
	if err != nil {
		return nil, err
	}
	var c Container
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	c.Config = &runtimeapi.ContainerConfig{}
	if err := protojson.Unmarshal(c.RawConfig, c.Config); err != nil {
		return nil, err
	}
	if c.ID != filepath.Base(dir) {
		return nil, fmt.Errorf("container record in %s names container %q", dir, c.ID)
	}
	return &c, nil
}

func copyContainer(c *Container) *Container {
	cp := &Container{
		ID: c.ID, PodID: c.PodID, Config: c.Config, RawConfig: c.RawConfig, ImageID: c.ImageID, Layers: c.Layers, State: c.State,
		CreatedAt: c.CreatedAt, StartedAt: c.StartedAt, LogPath: c.LogPath, LogDir: c.LogDir, Cgroup: c.Cgroup,
		Rootfs: c.Rootfs, StopSig: c.StopSig, ImageVolumes: slices.Clone(c.ImageVolumes), StartPending: c.StartPending,
	}
	if c.User != nil {
		u := *c.User
		u.Groups = slices.Clone(c.User.Groups)
		cp.User = &u
	}
	if c.Exit != nil {
		e := *c.Exit
		cp.Exit = &e
	}
	if c.Monitor != nil {
		m := *c.Monitor
		cp.Monitor = &m
	}
	return cp
}

func containerKey(podID string, md *runtimeapi.ContainerMetadata) string {
	return fmt.Sprintf("%s\x00%s\x00%d", podID, md.GetName(), md.GetAttempt())
}

// readContainerPID reads the file in which the monitor names the
// container's first process.
func readContainerPID(dir string) (*Process, error) {
	return readProcessFile(filepath.Join(dir, monitor.PIDFile))
}

// readMonitorProcess reads the file in which the monitor names itself.
func readMonitorProcess(dir string) (*Process, error) {
	return readProcessFile(filepath.Join(dir, monitor.SelfFile))
}

// readProcessFile reads a process file of the monitor's (its own, or
// the container's first process).
func readProcessFile(path string) (*Process, error) {
	pid, start, err := monitor.ReadProcessFile(path)
	if err != nil {
		return nil, err
	}
	return &Process{PID: pid, StartTime: start, BootID: bootID()}, nil
}

// readExit reads how the container ended, as the monitor recorded it.
func readExit(dir string) (*Exit, error) {
	x, err := monitor.ReadExit(dir)
	if err != nil {
		return nil, err
	}
	e := &Exit{Code: x.Code, FinishedAt: x.FinishedAt, Reason: "Completed"}
	switch {
	case x.OOMKilled:
		e.Reason = "OOMKilled"
	case x.Code != 0:
		e.Reason = "Error"
	}
	return e, nil
}

// lockContainer finds a container and takes its lock; NotFound if there is
// no such container (any more).
func (m *Manager) lockContainer(id string) (*Container, func(), error) {
	m.mu.Lock()
	c, err := m.findContainerLocked(id)
	m.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	unlock, ok := lockStill(m, c, c.ID, m.containers)
	if !ok {
		return nil, nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return c, unlock, nil
}

// lockStill takes the lock of an object found under id in objs (m.pods,
// m.containers) and checks that it is still there: a removal may have
// come while the lock was waited for. The object is the caller's to
// unlock if so.
func lockStill[T any](m *Manager, found *T, id string, objs map[string]*T) (unlock func(), ok bool) {
	unlock = m.lockID(id)
	m.mu.Lock()
	current := objs[id]
	m.mu.Unlock()
	if current != found {
		unlock()
		return nil, false
	}
	return unlock, true
}
