package image

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// RegistryConfig is what the daemon's config file says about one registry host.
type RegistryConfig struct {
	// Mirrors are tried in order before the registry itself. An entry is
	// "host[:port]" or a URL; "http://" marks the mirror as plain HTTP.
	Mirrors []string `toml:"mirrors"`
	// Insecure allows plain HTTP to the registry itself.
	Insecure bool `toml:"insecure"`
	// CA is a PEM bundle of certificates to trust beside the system's,
	// for this host whether it is a registry or another's mirror.
	CA string `toml:"ca"`
	// ClientCert and ClientKey are a PEM certificate and key presented to
	// the host (mutual TLS).
	ClientCert string `toml:"client_cert"`
	ClientKey  string `toml:"client_key"`
	// SkipVerify accepts any certificate from the host: only when set.
	SkipVerify bool `toml:"skip_verify"`
}

// endpoint is one place an image can be fetched from.
type endpoint struct {
	host     string // host[:port] as the registry protocol addresses it
	insecure bool   // plain HTTP allowed
	mirror   bool
}

func (e endpoint) String() string {
	scheme := "https"
	if e.insecure {
		scheme = "http"
	}
	return scheme + "://" + e.host
}

// ValidateRegistries checks the registry section of the config, so that a
// typo is reported when the daemon starts and not at the first pull.
func ValidateRegistries(regs map[string]RegistryConfig) error {
	for host, rc := range regs {
		if host == "" || strings.ContainsAny(host, "/ ") {
			return fmt.Errorf("registry %q: the key must be a registry host such as \"registry.k8s.io\" or \"127.0.0.1:5000\"", host)
		}
		for _, m := range rc.Mirrors {
			if _, err := parseMirror(m); err != nil {
				return fmt.Errorf("registry %q: %w", host, err)
			}
		}
		if (rc.ClientCert == "") != (rc.ClientKey == "") {
			return fmt.Errorf("registry %q: client_cert and client_key go together", host)
		}
		// The files are read now, so that a wrong path is found at the
		// start and not at the first pull.
		if _, err := hostTLS(regs, nil, host); err != nil {
			return err
		}
	}
	return nil
}

func parseMirror(m string) (endpoint, error) {
	if !strings.Contains(m, "://") {
		m = "https://" + m
	}
	u, err := url.Parse(m)
	if err != nil {
		return endpoint{}, fmt.Errorf("mirror %q: %w", m, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return endpoint{}, fmt.Errorf("mirror %q: scheme must be http or https", m)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return endpoint{}, fmt.Errorf("mirror %q: give only a scheme and host[:port]", m)
	}
	return endpoint{host: u.Host, insecure: u.Scheme == "http", mirror: true}, nil
}

// endpoints lists, in order, where an image of the registry named domain is
// fetched from: its mirrors, then the registry itself.
func endpoints(regs map[string]RegistryConfig, domain string) []endpoint {
	rc := regs[domain]
	var eps []endpoint
	for _, m := range rc.Mirrors {
		if ep, err := parseMirror(m); err == nil {
			eps = append(eps, ep)
		}
	}
	return append(eps, endpoint{host: domain, insecure: rc.Insecure})
}

// registryTransport is what a pull talks to registries through.
//
// It refuses plain HTTP to every host the config has not allowed it for:
// go-containerregistry on its own falls back to HTTP for loopback and
// private addresses, and husk only speaks HTTP where the administrator said
// so. And it reports every read of a response body to progress, so that a
// registry that stops sending mid-layer is noticed even when the caller set
// no deadline (kubelet sets none on PullImage).
type registryTransport struct {
	next     http.RoundTripper
	allowed  map[string]bool
	progress func()
}

func (rt registryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !rt.allowed[req.URL.Host] {
		return nil, fmt.Errorf("plain HTTP to %s is not allowed: mark it insecure or list it as an http:// mirror in the config", req.URL.Host)
	}
	resp, err := rt.next.RoundTrip(req)
	if err == nil && rt.progress != nil {
		rt.progress()
		resp.Body = progressBody{resp.Body, rt.progress}
	}
	return resp, err
}

type progressBody struct {
	io.ReadCloser
	progress func()
}

func (b progressBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.progress()
	}
	return n, err
}

func newTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
		ForceAttemptHTTP2:     true,
	}
}
