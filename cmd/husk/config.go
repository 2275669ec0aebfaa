package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/husk-runtime/husk/internal/tracing"
	"github.com/husk-runtime/husk/oci/image"
	"github.com/husk-runtime/husk/sandbox/nri"
)

const defaultConfigPath = "/etc/husk/config.toml"

// Config is the daemon's configuration file; flags override its values.
type Config struct {
	Listen string `toml:"listen" json:"listen"`
	Root   string `toml:"root" json:"root"`
	State  string `toml:"state" json:"state"`
	// Registry holds mirrors and plain-HTTP permissions per registry host:
	//
	//	[registry."registry.k8s.io"]
	//	mirrors = ["http://127.0.0.1:5000"]
	Registry map[string]image.RegistryConfig `toml:"registry" json:"registry,omitempty"`
	// RegistryCertsDirs hold TLS files per registry host, as Docker's
	// /etc/docker/certs.d does: <dir>/<host[:port]>/ca.crt (any *.crt),
	// client.cert and client.key.
	RegistryCertsDirs []string `toml:"registry_certs_dirs" json:"registry_certs_dirs,omitempty"`
	// GlobalAuthFile holds registry credentials, in the format of Docker's
	// config.json, for pulls that bring none (as CRI-O's global_auth_file).
	GlobalAuthFile string `toml:"global_auth_file" json:"global_auth_file,omitempty"`
	// SignaturePolicy: by scope ("*", a registry host, host/repository;
	// the longest that holds an image wins), accept, reject, or require a
	// cosign signature by one of the keys:
	//
	//	[signature_policy."registry.example/team"]
	//	mode = "signed"
	//	keys = ["/etc/husk/keys/team.pub"]
	SignaturePolicy map[string]image.PolicyConfig `toml:"signature_policy" json:"signature_policy,omitempty"`
	// PullProgressTimeout ends a pull whose registry sends nothing for this
	// long ("1m", "30s"). kubelet puts no deadline on PullImage, so without
	// it a registry that stops answering would hold the pull forever.
	PullProgressTimeout time.Duration `toml:"pull_progress_timeout" json:"pull_progress_timeout"`
	// PinnedImages are reported pinned, so kubelet never garbage-collects
	// them: names ("registry.k8s.io/pause:3.10"), ids, or prefixes ending
	// in "*" ("registry.k8s.io/pause:*").
	PinnedImages []string `toml:"pinned_images" json:"pinned_images,omitempty"`
	// LogVerbosity is the log's verbosity (klog's -v, 0-10) unless --v is
	// given; reloaded on SIGHUP.
	LogVerbosity int `toml:"log_verbosity" json:"log_verbosity"`
	// CgroupDriver is the kubelet cgroup driver to follow: "cgroupfs" or
	// "systemd" (kubelet asks with RuntimeConfig).
	CgroupDriver string    `toml:"cgroup_driver" json:"cgroup_driver"`
	CNI          CNIConfig `toml:"cni" json:"cni"`
	// RuntimeBinary is husk-runtime, which pods and containers run from
	// (a sealed copy of it). Empty: the husk-runtime next to husk, else
	// the first in $PATH.
	RuntimeBinary string `toml:"runtime_binary" json:"runtime_binary"`
	// CRIU is the criu binary (4.2 or later) that checkpoints and restores
	// run. Empty: the criu next to husk (`make` builds one there), else
	// the first in $PATH; none found, and checkpoints are refused.
	CRIU string `toml:"criu" json:"criu"`
	// StatsMaxAge: ListContainerStats, ListPodSandboxStats and
	// ListPodSandboxMetrics answer from the last sample while it is at
	// most this old, and take the next one in the background after the
	// call ("30s"; "0s" reads at every call). ContainerStats and
	// PodSandboxStats always read now.
	StatsMaxAge time.Duration `toml:"stats_max_age" json:"stats_max_age"`
	// Runtimes are runtime handlers (RuntimeClass handler names) run by a
	// runc-compatible binary instead of husk's own runtime:
	//
	//	[runtimes.runc]
	//	path = "/usr/sbin/runc"
	Runtimes map[string]RuntimeConfig `toml:"runtimes" json:"runtimes,omitempty"`
	// CDI: devices named by the Container Device Interface (CDI_devices,
	// cdi.k8s.io/ annotations), from the specs in these directories
	// (later ones win), re-read when they change:
	//
	//	[cdi]
	//	enable = true
	//	spec_dirs = ["/etc/cdi", "/var/run/cdi"]
	CDI CDIConfig `toml:"cdi" json:"cdi"`
	// NRI: plugins of the Node Resource Interface (off by default), with
	// containerd's key names:
	//
	//	[nri]
	//	enable = true
	//	socket_path = "/var/run/nri/nri.sock"
	//	plugin_path = "/opt/nri/plugins"
	//	plugin_config_path = "/etc/nri/conf.d"
	//	plugin_registration_timeout = "5s"
	//	plugin_request_timeout = "2s"
	NRI nri.Config `toml:"nri" json:"nri"`
	// Metrics: the daemon's own Prometheus metrics, off by default:
	//
	//	[metrics]
	//	address = "127.0.0.1:9680"  # or "unix:///run/husk/metrics.sock"
	Metrics MetricsConfig `toml:"metrics" json:"metrics"`
	// Debug: [debug] pprof = true serves Go's profiles beside the metrics.
	Debug DebugConfig `toml:"debug" json:"debug"`
	// Tracing: OpenTelemetry spans to an OTLP endpoint, off by default:
	//
	//	[tracing]
	//	endpoint = "127.0.0.1:4317"
	//	protocol = "grpc"  # or "http/protobuf"
	//	insecure = true
	//	sampling_ratio = 1.0
	Tracing tracing.Config `toml:"tracing" json:"tracing"`
}

// CDIConfig turns CDI device injection on or off and says where the
// specs are.
type CDIConfig struct {
	Enable   bool     `toml:"enable" json:"enable"`
	SpecDirs []string `toml:"spec_dirs" json:"spec_dirs"`
}

// RuntimeConfig is one runtime handler.
type RuntimeConfig struct {
	// Path is the runtime's binary, which takes runc's command line.
	Path string `toml:"path" json:"path"`
}

// handlerName is what Kubernetes allows as a RuntimeClass handler (a DNS
// label).
var handlerName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func validateRuntimes(rs map[string]RuntimeConfig) error {
	for name, r := range rs {
		if !handlerName.MatchString(name) {
			return fmt.Errorf("runtimes.%q: a runtime handler's name is a DNS label (lower case letters, digits, '-')", name)
		}
		if !filepath.IsAbs(r.Path) {
			return fmt.Errorf("runtimes.%s.path: %q is not an absolute path", name, r.Path)
		}
		if fi, err := os.Stat(r.Path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("runtimes.%s.path: %q is not an executable file", name, r.Path)
		}
	}
	return nil
}

// CNIConfig says where pod networking comes from.
type CNIConfig struct {
	// ConfDir: the first .conflist/.conf/.json by name is the pod network.
	ConfDir string `toml:"conf_dir" json:"conf_dir"`
	// BinDirs are searched in order for plugins.
	BinDirs []string `toml:"bin_dirs" json:"bin_dirs"`
}

func defaultConfig() Config {
	return Config{
		Listen: "/run/husk/husk.sock",
		Root:   "/var/lib/husk",
		State:  "/run/husk",

		PullProgressTimeout: image.DefaultProgressTimeout,
		// kubelet's eviction manager asks every 10 s, and its summary
		// API and /metrics/cadvisor on each scrape: each call finds the
		// sample taken after the one before.
		StatsMaxAge:  30 * time.Second,
		CgroupDriver: "cgroupfs",
		CNI:          CNIConfig{ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin"}},
		// On, as in containerd 2: device plugins and DRA drivers name
		// their devices through CDI.
		CDI:     CDIConfig{Enable: true, SpecDirs: []string{"/etc/cdi", "/var/run/cdi"}},
		NRI:     nri.DefaultConfig(),
		Tracing: tracing.DefaultConfig(),
	}
}

// loadConfig reads path over the defaults. A missing file is fine when it
// is the default path (a fresh machine), an error when the user named it.
// Unknown keys are errors: a misspelt mirror setting must not be ignored.
func loadConfig(path string, explicit bool) (Config, error) {
	cfg := defaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !explicit {
			return cfg, nil
		}
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	md, err := toml.Decode(string(b), &cfg)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return cfg, fmt.Errorf("config %s, line %d: %s", path, perr.Position.Line, perr.Message)
		}
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		var keys []string
		for _, k := range undecoded {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		return cfg, fmt.Errorf("config %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	if cfg.CgroupDriver != "cgroupfs" && cfg.CgroupDriver != "systemd" {
		return cfg, fmt.Errorf("config %s: cgroup_driver must be \"cgroupfs\" or \"systemd\", not %q", path, cfg.CgroupDriver)
	}
	if cfg.LogVerbosity < 0 || cfg.LogVerbosity > 10 {
		return cfg, fmt.Errorf("config %s: log_verbosity must be 0 to 10", path)
	}
	if cfg.PullProgressTimeout <= 0 {
		return cfg, fmt.Errorf("config %s: pull_progress_timeout must be positive", path)
	}
	if cfg.StatsMaxAge < 0 {
		return cfg, fmt.Errorf("config %s: stats_max_age must not be negative", path)
	}
	if err := image.ValidateRegistries(cfg.Registry); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := image.ValidatePinned(cfg.PinnedImages); err != nil {
		return cfg, fmt.Errorf("config %s: pinned_images: %w", path, err)
	}
	if err := validateRuntimes(cfg.Runtimes); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := image.ValidatePolicies(cfg.SignaturePolicy); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := validateMetrics(cfg.Metrics, cfg.Debug); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.Tracing.Validate(); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}
