// Package nri connects husk to NRI plugins (github.com/containerd/nri's
// adaptation, as containerd and CRI-O use it): plugins connect on a socket
// or are started from a directory, are told of every pod's and
// container's lifecycle, may adjust a container as it is created and its
// resources when they are updated. The package knows NRI's types and
// nothing of husk's pods: sandbox converts them.
//
// Failure policy (the adaptation's own, as in containerd): an error a
// plugin returns fails the request; a plugin that crashes, hangs past
// the request timeout or breaks the protocol is disconnected and the
// request goes on without it.
package nri

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
	"k8s.io/klog/v2"
)

// Config is the [nri] table of husk's config, with containerd's key names.
type Config struct {
	Enable                    bool          `toml:"enable" json:"enable"`
	SocketPath                string        `toml:"socket_path" json:"socket_path"`
	PluginPath                string        `toml:"plugin_path" json:"plugin_path"`
	PluginConfigPath          string        `toml:"plugin_config_path" json:"plugin_config_path"`
	PluginRegistrationTimeout time.Duration `toml:"plugin_registration_timeout" json:"plugin_registration_timeout"`
	PluginRequestTimeout      time.Duration `toml:"plugin_request_timeout" json:"plugin_request_timeout"`
	// DisableConnections: only the plugins of PluginPath, no socket.
	DisableConnections bool `toml:"disable_connections" json:"disable_connections"`
}

// DefaultConfig is off, with the adaptation's default paths and timeouts.
func DefaultConfig() Config {
	return Config{
		SocketPath:                adaptation.DefaultSocketPath,
		PluginPath:                adaptation.DefaultPluginPath,
		PluginConfigPath:          adaptation.DefaultPluginConfigPath,
		PluginRegistrationTimeout: api.DefaultPluginRegistrationTimeout,
		PluginRequestTimeout:      api.DefaultPluginRequestTimeout,
	}
}

// Runtime is what plugins see of husk's pods and containers.
type Runtime interface {
	// List is every pod and container a newly connected plugin learns
	// of: pods made, containers created or running.
	List() ([]*api.PodSandbox, []*api.Container)
	// Update applies a plugin's change of a container's resources.
	Update(ctx context.Context, u *api.ContainerUpdate) error
}

type state int

const (
	created state = iota + 1
	running
	stopped
	removed
)

// NRI is husk's side of the adaptation. A nil *NRI is NRI off: every
// method does nothing.
type NRI struct {
	a  *adaptation.Adaptation
	rt Runtime

	// mu orders the events of one object and makes each sent once (a
	// container's stop comes from its exit or from StopContainer,
	// whichever is first).
	mu    sync.Mutex
	state map[string]state
}

// New makes the adaptation; Start lets plugins in.
func New(cfg Config, version string, rt Runtime) (*NRI, error) {
	if !cfg.Enable {
		return nil, nil
	}
	nrilog.Set(klogger{})
	adaptation.SetPluginRegistrationTimeout(cfg.PluginRegistrationTimeout)
	adaptation.SetPluginRequestTimeout(cfg.PluginRequestTimeout)
	n := &NRI{rt: rt, state: map[string]state{}}
	opts := []adaptation.Option{
		adaptation.WithPluginPath(cfg.PluginPath),
		adaptation.WithPluginConfigPath(cfg.PluginConfigPath),
		adaptation.WithSocketPath(cfg.SocketPath),
	}
	if cfg.DisableConnections {
		opts = append(opts, adaptation.WithDisabledExternalConnections())
	}
	a, err := adaptation.New("husk", version, n.sync, n.update, opts...)
	if err != nil {
		return nil, fmt.Errorf("nri: %w", err)
	}
	n.a = a
	return n, nil
}

// Start starts the plugins of the plugin path and listens for others.
// It runs before the CRI is served: it synchronizes those plugins.
func (n *NRI) Start() error {
	if n == nil {
		return nil
	}
	if err := n.a.Start(); err != nil {
		return fmt.Errorf("nri: %w", err)
	}
	return nil
}

// Stop disconnects every plugin.
func (n *NRI) Stop() {
	if n != nil {
		n.a.Stop()
	}
}

// Block holds off the synchronization of a plugin that is connecting
// until unblock: a CRI call that makes or changes a pod or container
// takes it first, before any of husk's locks, so that a plugin either
// sees the change in its synchronization or gets its event.
func (n *NRI) Block() (unblock func()) {
	if n == nil {
		return func() {}
	}
	return n.a.BlockPluginSync().Unblock
}

func (n *NRI) sync(ctx context.Context, cb adaptation.SyncCB) error {
	pods, ctrs := n.rt.List()
	n.mu.Lock()
	for _, p := range pods {
		if n.state[p.Id] == 0 {
			n.state[p.Id] = running
		}
	}
	for _, c := range ctrs {
		if n.state[c.Id] == 0 {
			n.state[c.Id] = created
			if c.State == api.ContainerState_CONTAINER_RUNNING {
				n.state[c.Id] = running
			}
		}
	}
	n.mu.Unlock()
	updates, err := cb(ctx, pods, ctrs)
	if err != nil {
		return err
	}
	go n.applyUpdates(updates)
	return nil
}

// update applies plugins' unsolicited changes; it returns those that
// failed.
func (n *NRI) update(ctx context.Context, updates []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	var failed []*api.ContainerUpdate
	var errs []error
	for _, u := range updates {
		if err := n.rt.Update(ctx, u); err != nil && !u.GetIgnoreFailure() {
			failed = append(failed, u)
			errs = append(errs, err)
		}
	}
	if len(failed) > 0 {
		return failed, fmt.Errorf("updating %d containers: %v", len(failed), errs)
	}
	return nil, nil
}

// applyUpdates applies what a plugin asked of other containers than the
// one of its event, apart from that event: their locks may be held.
func (n *NRI) applyUpdates(updates []*api.ContainerUpdate) {
	for _, u := range updates {
		if u == nil {
			continue
		}
		if err := n.rt.Update(context.Background(), u); err != nil {
			klog.ErrorS(err, "Applying an NRI plugin's update of a container", "id", u.GetContainerId())
		}
	}
}

// RunPodSandbox tells plugins of a pod being made; an error fails it.
func (n *NRI) RunPodSandbox(ctx context.Context, pod *api.PodSandbox) error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.state[pod.Id] = running
	return n.a.RunPodSandbox(ctx, &api.RunPodSandboxRequest{Pod: pod})
}

// StopPodSandbox tells plugins of a pod's stop, once.
func (n *NRI) StopPodSandbox(ctx context.Context, pod *api.PodSandbox) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopPodLocked(ctx, pod)
}

func (n *NRI) stopPodLocked(ctx context.Context, pod *api.PodSandbox) {
	if s := n.state[pod.Id]; s != created && s != running {
		return
	}
	n.state[pod.Id] = stopped
	if err := n.a.StopPodSandbox(ctx, &api.StopPodSandboxRequest{Pod: pod}); err != nil {
		klog.ErrorS(err, "NRI StopPodSandbox", "pod", pod.Id)
	}
}

// RemovePodSandbox tells plugins of a pod's removal (and its stop, if
// they were not told), once.
func (n *NRI) RemovePodSandbox(ctx context.Context, pod *api.PodSandbox) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopPodLocked(ctx, pod)
	if n.state[pod.Id] == removed || n.state[pod.Id] == 0 {
		delete(n.state, pod.Id)
		return
	}
	delete(n.state, pod.Id)
	if err := n.a.RemovePodSandbox(ctx, &api.RemovePodSandboxRequest{Pod: pod}); err != nil {
		klog.ErrorS(err, "NRI RemovePodSandbox", "pod", pod.Id)
	}
}

// CreateContainer asks plugins for their adjustment of a container being
// created; the updates are theirs for other containers, applied apart.
// An error fails the creation.
func (n *NRI) CreateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, error) {
	if n == nil {
		return nil, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.state[ctr.Id] = created
	resp, err := n.a.CreateContainer(ctx, &api.CreateContainerRequest{Pod: pod, Container: ctr})
	if err != nil {
		return nil, err
	}
	go n.applyUpdates(resp.GetUpdate())
	return resp.GetAdjust(), nil
}

// PostCreateContainer tells plugins a container was created.
func (n *NRI) PostCreateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.a.PostCreateContainer(ctx, &api.PostCreateContainerRequest{Pod: pod, Container: ctr}); err != nil {
		klog.ErrorS(err, "NRI PostCreateContainer", "id", ctr.Id)
	}
}

// StartContainer tells plugins a container is about to start; an error
// fails the start.
func (n *NRI) StartContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.state[ctr.Id] = running
	return n.a.StartContainer(ctx, &api.StartContainerRequest{Pod: pod, Container: ctr})
}

// PostStartContainer tells plugins a container started.
func (n *NRI) PostStartContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.a.PostStartContainer(ctx, &api.PostStartContainerRequest{Pod: pod, Container: ctr}); err != nil {
		klog.ErrorS(err, "NRI PostStartContainer", "id", ctr.Id)
	}
}

// StopContainer tells plugins a container stopped (it exited, or was
// stopped), once.
func (n *NRI) StopContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopContainerLocked(ctx, pod, ctr)
}

func (n *NRI) stopContainerLocked(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if s := n.state[ctr.Id]; s != created && s != running {
		return
	}
	n.state[ctr.Id] = stopped
	resp, err := n.a.StopContainer(ctx, &api.StopContainerRequest{Pod: pod, Container: ctr})
	if err != nil {
		klog.ErrorS(err, "NRI StopContainer", "id", ctr.Id)
		return
	}
	go n.applyUpdates(resp.GetUpdate())
}

// RemoveContainer tells plugins of a container's removal (and its stop,
// if they were not told), once.
func (n *NRI) RemoveContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopContainerLocked(ctx, pod, ctr)
	s := n.state[ctr.Id]
	delete(n.state, ctr.Id)
	if s == 0 || s == removed {
		return
	}
	if err := n.a.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: pod, Container: ctr}); err != nil {
		klog.ErrorS(err, "NRI RemoveContainer", "id", ctr.Id)
	}
}

// UpdateContainer asks plugins about a change of a container's
// resources: what to apply instead (nil: the request as it is). An error
// fails the update.
func (n *NRI) UpdateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container, res *api.LinuxResources) (*api.LinuxResources, error) {
	if n == nil {
		return nil, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	resp, err := n.a.UpdateContainer(ctx, &api.UpdateContainerRequest{Pod: pod, Container: ctr, LinuxResources: res})
	if err != nil {
		return nil, err
	}
	updates := resp.GetUpdate()
	if len(updates) == 0 {
		return nil, nil
	}
	go n.applyUpdates(updates[:len(updates)-1])
	return updates[len(updates)-1].GetLinux().GetResources(), nil
}

// PostUpdateContainer tells plugins a container's resources changed.
func (n *NRI) PostUpdateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.a.PostUpdateContainer(ctx, &api.PostUpdateContainerRequest{Pod: pod, Container: ctr}); err != nil {
		klog.ErrorS(err, "NRI PostUpdateContainer", "id", ctr.Id)
	}
}

// klogger sends the adaptation's log to husk's.
type klogger struct{}

func (klogger) Debugf(_ context.Context, format string, args ...any) {
	klog.V(4).InfoS("NRI: " + fmt.Sprintf(format, args...))
}

func (klogger) Infof(_ context.Context, format string, args ...any) {
	klog.InfoS("NRI: " + fmt.Sprintf(format, args...))
}

func (klogger) Warnf(_ context.Context, format string, args ...any) {
	klog.InfoS("NRI warning: " + fmt.Sprintf(format, args...))
}

func (klogger) Errorf(_ context.Context, format string, args ...any) {
	klog.ErrorS(nil, "NRI: "+fmt.Sprintf(format, args...))
}
