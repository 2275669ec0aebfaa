package sandbox

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// hostnamePattern is an RFC 1123 name, as Kubernetes validates hostnames;
// the kernel takes at most 64 bytes.
var hostnamePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// Files the containers of a pod mount, kept with the pod record.
const (
	HostnameFile = "hostname"
	HostsFile    = "hosts"
	ResolvFile   = "resolv.conf"
)

// FilePath is where a pod file is, for the containers' mounts.
func (m *Manager) FilePath(id, name string) string {
	return filepath.Join(m.rootDir(id), name)
}

func podHostname(cfg *runtimeapi.PodSandboxConfig, hostNetwork bool) (string, error) {
	if hostNetwork {
		return os.Hostname()
	}
	h := cfg.GetHostname()
	if h == "" {
		// kubelet always sends one; crictl users may not. The pod's name
		// may hold what a hostname cannot.
		h = hostnameFrom(cfg.GetMetadata().GetName())
	}
	if !hostnamePattern.MatchString(h) || len(h) > 64 {
		return "", fmt.Errorf("hostname: %q is not a valid hostname (lower-case RFC 1123, at most 64 characters): %w", h, errdefs.ErrInvalidArgument)
	}
	return h, nil
}

func validateDNS(dns *runtimeapi.DNSConfig) error {
	for _, s := range dns.GetServers() {
		if net.ParseIP(s) == nil {
			return fmt.Errorf("dns_config.servers: %q is not an IP address: %w", s, errdefs.ErrInvalidArgument)
		}
	}
	for _, v := range append(append([]string{}, dns.GetSearches()...), dns.GetOptions()...) {
		if v == "" || strings.ContainsAny(v, " \t\n") {
			return fmt.Errorf("dns_config: %q is not a single word: %w", v, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// resolvConf is the pod's resolv.conf: from the DNS config kubelet passes,
// or the host's when there is none (a pod run by crictl without DNS).
func resolvConf(dns *runtimeapi.DNSConfig) ([]byte, error) {
	if len(dns.GetServers()) == 0 && len(dns.GetSearches()) == 0 && len(dns.GetOptions()) == 0 {
		b, err := os.ReadFile("/etc/resolv.conf")
		if os.IsNotExist(err) {
			return nil, nil
		}
		return b, err
	}
	var b strings.Builder
	if len(dns.GetSearches()) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.GetSearches(), " "))
	}
	for _, s := range dns.GetServers() {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(dns.GetOptions()) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(dns.GetOptions(), " "))
	}
	return []byte(b.String()), nil
}

// hostsFile names localhost and the pod itself. kubelet mounts a hosts
// file of its own into its pods; this one serves pods run otherwise.
func hostsFile(hostname string, ips []string, hostNetwork bool) ([]byte, error) {
	if hostNetwork {
		b, err := os.ReadFile("/etc/hosts")
		if err == nil || !os.IsNotExist(err) {
			return b, err
		}
	}
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	for _, ip := range ips {
		fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
	}
	return []byte(b.String()), nil
}

func hostnameFrom(name string) string {
	b := []byte(strings.ToLower(name))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '.' {
			b[i] = '-'
		}
	}
	h := strings.Trim(string(b), "-.")
	if len(h) > 63 {
		h = strings.Trim(h[:63], "-.")
	}
	if h == "" {
		h = "pod"
	}
	return h
}
