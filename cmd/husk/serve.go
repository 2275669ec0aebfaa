package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/nri/pkg/api"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/husk-runtime/husk/cri"
	"github.com/husk-runtime/husk/internal/metrics"
	"github.com/husk-runtime/husk/internal/tracing"
	"github.com/husk-runtime/husk/network"
	"github.com/husk-runtime/husk/oci/image"
	"github.com/husk-runtime/husk/oci/runtime/apparmor"
	"github.com/husk-runtime/husk/oci/runtime/cgroups"
	"github.com/husk-runtime/husk/oci/runtime/linux"
	"github.com/husk-runtime/husk/oci/runtime/selinux"
	"github.com/husk-runtime/husk/sandbox"
	"github.com/husk-runtime/husk/sandbox/nri"
)

// stringList is a flag that may be given several times.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// shutdownGrace is how long in-flight calls get to finish on SIGTERM before
// they are cancelled.
const shutdownGrace = 10 * time.Second

// serveUsage is what `husk serve --help` says before the flags.
const serveUsage = `Usage: husk serve [flags]

Serves the CRI (kubelet's RuntimeService and ImageService) on a unix socket
only root may use. Settings come from the config file (default ` + defaultConfigPath + `,
TOML; deploy/config.toml documents every key), flags over it:
  listen, root, state        the socket, persistent data, state lost at reboot
  registry."HOST"            mirrors, insecure (plain HTTP), ca, client_cert,
                             client_key, skip_verify; registry_certs_dirs,
                             global_auth_file, pinned_images, pull_progress_timeout
  signature_policy."SCOPE"   accept, reject, or require a cosign signature
  cgroup_driver              cgroupfs or systemd, as kubelet's
  stats_max_age              how old a sample the stats Lists may answer with
  cni                        conf_dir, bin_dirs
  runtimes."HANDLER".path    runc-compatible runtimes by RuntimeClass handler
  cdi, nri                   device specs; Node Resource Interface plugins
  metrics.address, debug     Prometheus metrics of the daemon; pprof
  tracing                    OpenTelemetry spans to an OTLP endpoint

Signals: SIGTERM or SIGINT stop serving (calls in flight get 10 s;
containers keep running, and are found again at the next start); SIGHUP
reloads registry, registry_certs_dirs, global_auth_file, signature_policy,
pinned_images, pull_progress_timeout, runtimes, metrics, debug and
log_verbosity; other changed keys wait for a restart.

Flags:
`

// serveFlags are husk serve's flags, which override the config file.
type serveFlags struct {
	fs                                                                      *flag.FlagSet
	klog                                                                    *flag.FlagSet
	config, listen, root, state, cniConfDir, cgroupDriver, runtimeBin, criu *string
	cniBinDirs                                                              stringList
	explicit, verbose                                                       bool // --config, --v given
}

func newServeFlags(stderr io.Writer) *serveFlags {
	fs := flag.NewFlagSet("husk serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = io.WriteString(stderr, serveUsage)
		fs.PrintDefaults()
	}
	f := &serveFlags{fs: fs, klog: flag.NewFlagSet("klog", flag.ContinueOnError)}
	f.config = fs.String("config", defaultConfigPath, "configuration file (TOML)")
	f.listen = fs.String("listen", "", "unix socket to serve the CRI on (default /run/husk/husk.sock)")
	f.root = fs.String("root", "", "directory for persistent data: images, pods, containers (default /var/lib/husk)")
	f.state = fs.String("state", "", "directory for runtime state that does not survive a reboot (default /run/husk)")
	f.cniConfDir = fs.String("cni-conf-dir", "", "directory of CNI network configs (default /etc/cni/net.d)")
	fs.Var(&f.cniBinDirs, "cni-bin-dir", "directory of CNI plugins; repeat for several (default /opt/cni/bin)")
	f.cgroupDriver = fs.String("cgroup-driver", "", "cgroup driver kubelet uses: cgroupfs or systemd (default cgroupfs)")
	f.runtimeBin = fs.String("runtime-binary", "", "the husk-runtime binary pods and containers run from (default: next to husk, else in $PATH)")
	f.criu = fs.String("criu", "", "the criu binary checkpoints and restores run (default: next to husk, else in $PATH)")
	klog.InitFlags(f.klog)
	fs.Var(f.klog.Lookup("v").Value, "v", "log verbosity (0-10; default the config's log_verbosity)")
	return f
}

// parse reads args; the exit code is for a bad command line or --help.
func (f *serveFlags) parse(args []string, stderr io.Writer) (exit int, ok bool) {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if f.fs.NArg() > 0 {
		_, _ = fmt.Fprintf(stderr, "husk serve: unexpected arguments: %v\n", f.fs.Args())
		return 2, false
	}
	f.fs.Visit(func(fl *flag.Flag) {
		f.explicit = f.explicit || fl.Name == "config"
		f.verbose = f.verbose || fl.Name == "v"
	})
	return 0, true
}

// load reads the config file with the flags over it: at the start, and
// again at each SIGHUP (reload.go).
func (f *serveFlags) load() (Config, error) {
	cfg, err := loadConfig(*f.config, f.explicit)
	if err != nil {
		return cfg, err
	}
	for _, o := range []struct{ flag, field *string }{
		{f.listen, &cfg.Listen}, {f.root, &cfg.Root}, {f.state, &cfg.State},
		{f.cniConfDir, &cfg.CNI.ConfDir}, {f.cgroupDriver, &cfg.CgroupDriver}, {f.runtimeBin, &cfg.RuntimeBinary},
		{f.criu, &cfg.CRIU},
	} {
		if *o.flag != "" {
			*o.field = *o.flag
		}
	}
	if len(f.cniBinDirs) > 0 {
		cfg.CNI.BinDirs = f.cniBinDirs
	}
	if cfg.CgroupDriver != "cgroupfs" && cfg.CgroupDriver != "systemd" {
		return cfg, errors.New("--cgroup-driver must be cgroupfs or systemd")
	}
	return cfg, nil
}

// setVerbosity sets the log's verbosity to the config's, unless --v did.
func (f *serveFlags) setVerbosity(v int) {
	if !f.verbose {
		_ = f.klog.Set("v", strconv.Itoa(v))
	}
}

func serve(args []string, stderr io.Writer) int {
	flags := newServeFlags(stderr)
	if exit, ok := flags.parse(args, stderr); !ok {
		return exit
	}
	hup := hangups()
	cfg, err := flags.load()
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "husk serve: %v\n", err)
		return 1
	}
	flags.setVerbosity(cfg.LogVerbosity)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		// A second signal during the grace period ends the daemon at once.
		<-ctx.Done()
		stop()
	}()
	reloads := func(t reloadTargets) {
		t.verbosity = flags.setVerbosity
		reloadOnHangup(ctx, hup, cfg, flags.load, t)
	}
	if err := runDaemon(ctx, cfg, reloads); err != nil {
		klog.ErrorS(err, "husk serve failed")
		klog.Flush()
		return 1
	}
	klog.Flush()
	return 0
}

// startTracing installs the span exporter when [tracing] has an endpoint,
// and gives the gRPC server's option that makes each CRI call a span
// continuing kubelet's trace; nothing when off.
func startTracing(ctx context.Context, c tracing.Config) (opts []grpc.ServerOption, stop func(), err error) {
	shutdown, err := tracing.Start(ctx, c, version)
	if err != nil {
		return nil, nil, err
	}
	stop = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			klog.ErrorS(err, "Sending the last spans")
		}
	}
	if c.Enabled() {
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler()))
	}
	return opts, stop, nil
}

// imageOptions are the image store's settings of cfg.
func imageOptions(cfg Config) image.Options {
	return image.Options{
		Registries:      cfg.Registry,
		UserAgent:       "husk/" + version,
		ProgressTimeout: cfg.PullProgressTimeout,
		Pinned:          cfg.PinnedImages,
		CertsDirs:       cfg.RegistryCertsDirs,
		AuthFile:        cfg.GlobalAuthFile,
		SignaturePolicy: cfg.SignaturePolicy,
	}
}

// restorePods makes the pod network and the pods' manager, which reads
// back what the daemon ran before.
func restorePods(ctx context.Context, cfg Config, cg *cgroups.Manager, binary *os.File, images *image.Store) (*sandbox.Manager, error) {
	netw, err := network.New(network.Config{
		ConfDir:  cfg.CNI.ConfDir,
		BinDirs:  cfg.CNI.BinDirs,
		CacheDir: filepath.Join(cfg.Root, "cni"),
	})
	if err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	start := time.Now()
	pods, err := sandbox.New(ctx, sandbox.Options{
		Root:    cfg.Root,
		State:   cfg.State,
		Network: netw,
		Cgroups: cg,
		Binary:  binary,
		Images:  images,

		Runtimes: runtimePaths(cfg.Runtimes),
		AppArmor: apparmor.Enabled(),
		CDI:      cdiCache(cfg.CDI),
		CRIU:     findCRIU(cfg.CRIU),

		StatsMaxAge: cfg.StatsMaxAge,
	})
	if err != nil {
		return nil, fmt.Errorf("restoring pods: %w", err)
	}
	metrics.RestoreDuration.Set(time.Since(start).Seconds())
	return pods, nil
}

// startNRI starts the NRI plugins and hands them to the pods.
func startNRI(cfg nri.Config, pods *sandbox.Manager) (stop func(), err error) {
	plugins, err := nri.New(cfg, version, nriRuntime{pods})
	if err != nil {
		return nil, err
	}
	if err := plugins.Start(); err != nil {
		return nil, err
	}
	pods.SetNRI(plugins)
	return plugins.Stop, nil
}

// startStreamServer serves exec, attach and port-forward sessions until it
// is closed.
func startStreamServer(pods *sandbox.Manager) (*cri.StreamServer, error) {
	stream, err := cri.NewStreamServer(pods)
	if err != nil {
		return nil, fmt.Errorf("stream server: %w", err)
	}
	go func() {
		// Close at shutdown ends it with ErrServerClosed: no error.
		if err := stream.Serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Stream server stopped")
		}
	}()
	return stream, nil
}

// runDaemon serves until ctx ends; once it serves, it hands what a config
// reload changes to reloads.
func runDaemon(ctx context.Context, cfg Config, reloads func(reloadTargets)) error {
	unlock, err := claimDirs(&cfg)
	if err != nil {
		return err
	}
	defer unlock()

	// The socket first: Listen changes the process's umask for a moment,
	// which must happen before any other goroutine creates files.
	lis, err := cri.Listen(cfg.Listen)
	if err != nil {
		return err
	}
	defer func() { _ = lis.Close() }()
	restarts := countStart(cfg.State)
	traced, stopTracing, err := startTracing(ctx, cfg.Tracing)
	if err != nil {
		return err
	}
	defer stopTracing()

	images, err := image.Open(filepath.Join(cfg.Root, "images"), imageOptions(cfg))
	if err != nil {
		return fmt.Errorf("opening image store: %w", err)
	}
	defer func() { _ = images.Close() }()

	binary, err := sealRuntime(cfg.RuntimeBinary)
	if err != nil {
		return err
	}
	defer func() { _ = binary.Close() }()
	cg, err := cgroups.New(cgroups.Driver(cfg.CgroupDriver))
	if err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	defer cg.Close()
	pods, err := restorePods(ctx, cfg, cg, binary, images)
	if err != nil {
		return err
	}
	defer pods.Close()
	// Plugins start and synchronize before the CRI is served.
	stopNRI, err := startNRI(cfg.NRI, pods)
	if err != nil {
		return err
	}
	defer stopNRI()
	// At shutdown the event streams end first: the gRPC server's graceful
	// stop waits for every call in flight, and they would never end.
	context.AfterFunc(ctx, pods.Close)

	stream, err := startStreamServer(pods)
	if err != nil {
		return err
	}
	defer func() { _ = stream.Close() }()

	srv := newCRIServer(ctx, cfg, pods, images, stream)
	// The calls are counted whether or not the metrics are served: a
	// reload may start serving them.
	calls := cri.NewCallMetrics()
	endpoint, err := newMetricsEndpoint(srv, calls, restarts)
	if err != nil {
		return err
	}
	if err := endpoint.apply(cfg.Metrics, cfg.Debug); err != nil {
		return err
	}
	defer endpoint.close()
	reloads(reloadTargets{images: images, pods: pods, metrics: endpoint})
	return serveCRI(ctx, cri.NewGRPCServer(srv, calls, traced...), lis, cfg)
}

// newCRIServer is the CRI's services over husk's pods and images, saying
// what this machine offers them.
func newCRIServer(ctx context.Context, cfg Config, pods *sandbox.Manager, images *image.Store, stream *cri.StreamServer) *cri.Server {
	userns := pods.UserNamespacesSupported(ctx, images.Dir())
	if userns != nil {
		klog.InfoS("Pods cannot have user namespaces of their own (hostUsers: false)", "reason", userns)
	}
	cfgJSON, _ := json.Marshal(cfg)
	return cri.New(cri.Options{
		Stream:  stream,
		Images:  images,
		Pods:    pods,
		Version: version,
		Info:    map[string]string{"config": string(cfgJSON), "lsm": lsmInfo()},

		RecursiveReadOnlyMounts: linux.RecursiveReadOnlySupported(),
		UserNamespaces:          userns == nil,
	})
}

// cdiCache is the CDI specs of cfg's directories, kept up to date by the
// library's own watch; nil when CDI is off.
func cdiCache(cfg CDIConfig) *cdi.Cache {
	if !cfg.Enable {
		return nil
	}
	c, _ := cdi.NewCache(cdi.WithSpecDirs(cfg.SpecDirs...), cdi.WithAutoRefresh(true))
	for path, errs := range c.GetErrors() {
		// A spec directory that is not there yet is the usual case (no
		// device driver has written one); the library watches for it.
		errs = slices.DeleteFunc(errs, func(err error) bool { return errors.Is(err, fs.ErrNotExist) })
		if len(errs) > 0 {
			klog.ErrorS(errors.Join(errs...), "A CDI spec cannot be used", "path", path)
		}
	}
	return c
}

// nriRuntime is what NRI plugins see of the pods.
type nriRuntime struct{ pods *sandbox.Manager }

func (r nriRuntime) List() ([]*api.PodSandbox, []*api.Container) { return r.pods.NRIList() }

func (r nriRuntime) Update(ctx context.Context, u *api.ContainerUpdate) error {
	return r.pods.NRIUpdate(ctx, u)
}

// lsmInfo says, for crictl info, which security modules the host has and
// what husk does with their requests.
func lsmInfo() string {
	lsm := map[string]string{"apparmor": "not enabled: RuntimeDefault and Unconfined run unconfined, a Localhost profile is refused", "selinux": "not enabled: a label is refused"}
	if apparmor.Enabled() {
		lsm["apparmor"] = "enforced: RuntimeDefault is " + apparmor.DefaultProfile + ", Localhost profiles are applied"
	}
	if selinux.Enabled() {
		lsm["selinux"] = "enabled: husk applies no labels and refuses a request for one"
	}
	b, _ := json.Marshal(lsm)
	return string(b)
}

// claimDirs makes cfg's paths absolute, and its root and state
// directories, resolved (mounts are found by their path in the mount
// table, which has no symlinks: /var/run is one to /run), and locks these:
// one daemon per directory, since two would corrupt each other's state.
func claimDirs(cfg *Config) (unlock func(), err error) {
	for _, p := range []*string{&cfg.Root, &cfg.State, &cfg.Listen} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, err
		}
		*p = abs
	}
	var unlocks []func()
	unlock = func() {
		for _, u := range unlocks {
			u()
		}
	}
	for _, dir := range []*string{&cfg.Root, &cfg.State} {
		if err := os.MkdirAll(*dir, 0o711); err != nil {
			unlock()
			return nil, fmt.Errorf("creating %s: %w", *dir, err)
		}
		resolved, err := filepath.EvalSymlinks(*dir)
		if err != nil {
			unlock()
			return nil, err
		}
		*dir = resolved
		u, err := lockDir(*dir)
		if err != nil {
			unlock()
			return nil, err
		}
		unlocks = append(unlocks, u)
	}
	return unlock, nil
}

// serveCRI serves the CRI on lis until ctx ends, then lets the calls in
// flight finish for shutdownGrace before cancelling them.
func serveCRI(ctx context.Context, g *grpc.Server, lis net.Listener, cfg Config) error {
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	klog.InfoS("husk is serving the CRI", "version", version, "socket", cfg.Listen, "root", cfg.Root, "state", cfg.State, "cgroupDriver", cfg.CgroupDriver, "apparmor", apparmor.Enabled())

	select {
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	klog.InfoS("Shutting down: waiting for calls in flight", "grace", shutdownGrace)
	done := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(shutdownGrace):
		klog.InfoS("Grace period over: cancelling the calls still in flight")
		g.Stop()
		<-done
	}
	klog.InfoS("husk stopped")
	return nil
}

// lockWait is how long lockDir waits for a lock that is held. A daemon
// killed while it forks a child (a CNI plugin, iptables, a monitor) leaves
// the lock's open file with that child until the child executes, which
// closes it (O_CLOEXEC): a restart right after a SIGKILL can find the lock
// held for that moment, by no daemon at all.
var lockWait = 10 * time.Second

// lockDir takes an exclusive lock on dir/husk.lock for the daemon's life.
func lockDir(dir string) (func(), error) {
	p := filepath.Join(dir, "husk.lock")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(lockWait)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		holder := lockHolder(p)
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is in use by another husk daemon%s", dir, holder)
		}
		return nil, fmt.Errorf("locking %s: %w", p, err)
	}
	return func() { _ = f.Close() }, nil
}

// lockHolder names the processes that have the lock file open: after a
// crash, the children that still hold it (/proc/locks would name the dead
// daemon that took it).
func lockHolder(path string) string {
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	var holders []string
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err != nil || target != path {
			continue
		}
		pid := strings.Split(fd, "/")[2]
		if pid == strconv.Itoa(os.Getpid()) {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + pid + "/cmdline")
		holders = append(holders, fmt.Sprintf("pid %s: %q", pid, strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " ")))
	}
	if len(holders) == 0 {
		return ""
	}
	return " (held by " + strings.Join(holders, ", ") + ")"
}

// findCRIU is the criu binary named, else the one next to husk, else the
// one in $PATH; "" if there is none.
func findCRIU(path string) string {
	if path != "" {
		return path
	}
	if self, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(self), "criu"); unix.Access(p, unix.X_OK) == nil {
			return p
		}
	}
	p, _ := exec.LookPath("criu")
	return p
}

// sealRuntime finds husk-runtime and returns a sealed copy of it, checked
// to be of this husk's version: the daemon and the runtime pass each other
// arguments and files that change between versions.
func sealRuntime(path string) (*os.File, error) {
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("locating husk-runtime: %w", err)
		}
		path = filepath.Join(filepath.Dir(self), "husk-runtime")
		if _, err := os.Stat(path); err != nil {
			if found, lerr := exec.LookPath("husk-runtime"); lerr == nil {
				path = found
			}
		}
	}
	binary, err := linux.SealedBinary(path)
	if err != nil {
		return nil, fmt.Errorf("husk-runtime (%s; --runtime-binary names another): %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, "/proc/self/fd/"+strconv.Itoa(int(binary.Fd())), "version")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if want := "husk-runtime " + version; err != nil || strings.TrimSpace(string(out)) != want {
		_ = binary.Close()
		return nil, fmt.Errorf("%s is not %s (it says %q, %v %s): build both with `make build`",
			path, want, strings.TrimSpace(string(out)), err, strings.TrimSpace(stderr.String()))
	}
	return binary, nil
}

func runtimePaths(rs map[string]RuntimeConfig) map[string]string {
	out := map[string]string{}
	for name, r := range rs {
		out[name] = r.Path
	}
	return out
}
