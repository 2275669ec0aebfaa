package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

// adjuster is an NRI plugin that gives every container an environment
// variable, an annotation, a mount, a memory limit and an open files
// limit, and refuses one;
// it counts the resource updates it is told were applied.
type adjuster struct {
	dir     string
	updated atomic.Int32
}

func (a *adjuster) PostUpdateContainer(context.Context, *api.PodSandbox, *api.Container) error {
	a.updated.Add(1)
	return nil
}

func (a *adjuster) CreateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	if c.Name == "refused" {
		return nil, nil, errors.New("adjuster refuses containers named refused")
	}
	adj := &api.ContainerAdjustment{}
	adj.AddEnv("NRI_SAW", c.Name)
	adj.AddAnnotation("example.com/adjusted", "yes")
	adj.AddMount(&api.Mount{Source: a.dir, Destination: "/nri", Type: "bind", Options: []string{"rbind", "ro"}})
	adj.SetLinuxMemoryLimit(64 << 20)
	adj.AddRlimit("RLIMIT_NOFILE", 1000, 500)
	return adj, nil, nil
}

// hanger is an NRI plugin that never answers for a container named hang.
type hanger struct{ closed chan struct{} }

func (h *hanger) CreateContainer(ctx context.Context, _ *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	if c.Name == "hang" {
		<-h.closed
	}
	return nil, nil, nil
}

func startPlugin(t *testing.T, socket, name, idx string, p any, opts ...stub.Option) stub.Stub {
	t.Helper()
	s, err := stub.New(p, append([]stub.Option{stub.WithSocketPath(socket), stub.WithPluginName(name), stub.WithPluginIdx(idx)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("plugin %s: %v", name, err)
	}
	t.Cleanup(s.Stop)
	return s
}

// NRI plugins change a container as it is created (environment,
// annotation, mount, memory limit), can refuse one (FailedPrecondition
// with their reason, nothing left), and one that hangs past the request
// timeout is disconnected while the container is created without it.
func TestNRIPluginsAdjustAndCannotBlock(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "busybox:plain", imagetest.BusyboxImage(t, v1.Config{}))
	nriDir, err := os.MkdirTemp("", "husk-nri-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(nriDir) })
	socket := filepath.Join(nriDir, "nri.sock")
	d := newDaemon(t, insecureConfig(reg.Host)+fmt.Sprintf("[nri]\nenable = true\nsocket_path = %q\nplugin_path = %q\nplugin_request_timeout = \"2s\"\n",
		socket, filepath.Join(nriDir, "plugins")))
	newPodNet(t, d).install(t, d)
	pullImage(t, d, reg.Ref("busybox:plain"))
	e := &ctrEnv{d: d, reg: reg, logs: t.TempDir()}
	ctx := context.Background()
	before := countContainerLeaks(t, d)

	shared := t.TempDir()
	writeFile(t, filepath.Join(shared, "from-plugin"), "mounted by NRI\n")
	adj := &adjuster{dir: shared}
	startPlugin(t, socket, "adjuster", "10", adj)
	h := &hanger{closed: make(chan struct{})}
	startPlugin(t, socket, "hanger", "20", h, stub.WithOnClose(func() { close(h.closed) }))

	podID, pod := e.pod(t, "nri")
	cfg := ctrConfig("adjusted", e.image("plain"), "sh", "-c", "echo saw=$NRI_SAW; cat /nri/from-plugin; touch /nri/x 2>/dev/null || echo read-only; sleep 300")
	id := e.run(t, podID, pod, cfg)
	waitFor(t, func() bool { return len(output(t, e.status(t, id).LogPath, "stdout")) >= 3 })
	if out := output(t, e.status(t, id).LogPath, "stdout"); strings.Join(out, "|") != "saw=adjusted|mounted by NRI|read-only" {
		t.Errorf("the adjusted container says %q", out)
	}
	if mem, _ := cgroupLimits(containerCgroup(t, d, id)); mem != fmt.Sprint(64<<20) {
		t.Errorf("the adjusted container's memory limit is %s, want the plugin's %d", mem, 64<<20)
	}
	// An exec'd process has the limit too, through the exec profile and
	// through exec-init.
	for _, how := range []string{"the profile", "exec-init"} {
		if how == "exec-init" {
			if err := os.Remove(filepath.Join(d.state, "containers", id, "exec.profile")); err != nil {
				t.Fatal(err)
			}
		}
		if first := execIsLikeFirst(t, e, id, "exec through "+how); !regexp.MustCompile(`Max open files +500 +1000 `).MatchString(first) {
			t.Errorf("the adjusted container's limits:\n%s", first)
		}
	}
	resp, err := d.runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil || !strings.Contains(resp.Info["info"], `"example.com/adjusted":"yes"`) {
		t.Errorf("the plugin's annotation is not in the spec: %v", err)
	}

	// Plugins hear of an update once it is applied, not of one refused
	// (a limit below what the container uses).
	update := func(limit int64) error {
		_, err := d.runtime.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: limit}})
		return err
	}
	if err := update(4096); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("an update below the container's use: %v", err)
	}
	if n := adj.updated.Load(); n != 0 {
		t.Errorf("plugins were told of %d applied updates after a refused one", n)
	}
	if err := update(128 << 20); err != nil {
		t.Fatal(err)
	}
	if n := adj.updated.Load(); n != 1 {
		t.Errorf("plugins were told of %d applied updates after one", n)
	}

	_, err = d.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: ctrConfig("refused", e.image("plain"), "true"), SandboxConfig: pod})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "adjuster refuses") {
		t.Errorf("a container a plugin refuses: %v, want FailedPrecondition with the plugin's reason", err)
	}

	t0 := time.Now()
	hang := e.create(t, podID, pod, ctrConfig("hang", e.image("plain"), "true"))
	t.Logf("created past the hanging plugin in %v", time.Since(t0))
	select {
	case <-h.closed:
	case <-time.After(10 * time.Second):
		t.Error("the plugin that hung was not disconnected")
	}
	if _, err := d.runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: hang}); err != nil {
		t.Fatal(err)
	}
	stopPod(t, d, podID)
	removePod(t, d, podID)
	if after := countContainerLeaks(t, d); after != before {
		t.Errorf("left behind: %+v, before %+v", after, before)
	}
}
