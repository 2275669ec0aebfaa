package image

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/klog/v2"
)

// The TLS of a registry host (or mirror) comes from its entry in the
// config (ca, client_cert and client_key, skip_verify) and from its
// directory in each certs directory, in the layout of Docker's
// /etc/docker/certs.d and containerd's certs.d: <dir>/<host[:port]>/ holds
// CA certificates as *.crt and client certificates as *.cert, each with
// its key as the *.key of the same name.

// hostTLS is the TLS configuration for host, or nil when nothing is
// configured for it and the system's defaults apply.
func hostTLS(regs map[string]RegistryConfig, certsDirs []string, host string) (*tls.Config, error) {
	rc := regs[host]
	var cas []string
	type pair struct{ cert, key string }
	var pairs []pair
	if rc.CA != "" {
		cas = append(cas, rc.CA)
	}
	if rc.ClientCert != "" {
		pairs = append(pairs, pair{rc.ClientCert, rc.ClientKey})
	}
	for _, dir := range certsDirs {
		entries, err := os.ReadDir(filepath.Join(dir, host))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("registry %s: certs directory: %w", host, err)
		}
		for _, e := range entries {
			p := filepath.Join(dir, host, e.Name())
			switch {
			case strings.HasSuffix(e.Name(), ".crt"):
				cas = append(cas, p)
			case strings.HasSuffix(e.Name(), ".cert"):
				pairs = append(pairs, pair{p, strings.TrimSuffix(p, ".cert") + ".key"})
			}
		}
	}
	if len(cas) == 0 && len(pairs) == 0 && !rc.SkipVerify {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: rc.SkipVerify} //nolint:gosec // only where the config says skip_verify = true
	if len(cas) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		for _, ca := range cas {
			if err := addCA(pool, ca); err != nil {
				return nil, fmt.Errorf("registry %s: %w", host, err)
			}
		}
		cfg.RootCAs = pool
	}
	for _, p := range pairs {
		c, err := tls.LoadX509KeyPair(p.cert, p.key)
		if err != nil {
			return nil, fmt.Errorf("registry %s: client certificate %s with key %s: %w", host, p.cert, p.key, err)
		}
		cfg.Certificates = append(cfg.Certificates, c)
	}
	return cfg, nil
}

// checkCertsDirs reads the TLS files of every host of the certs
// directories once, when the config is loaded, and logs what cannot be
// used: a pull from such a host would fail, saying so, but the daemon
// starts (the directories may hold files of hosts it never pulls from).
func checkCertsDirs(regs map[string]RegistryConfig, dirs []string) {
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				klog.ErrorS(err, "Registry certs directory unreadable", "dir", dir)
			}
			continue
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			if _, err := hostTLS(regs, dirs, e.Name()); err != nil {
				klog.ErrorS(err, "Registry TLS files unusable: pulls from this host will fail", "host", e.Name())
			}
		}
	}
}

func addCA(pool *x509.CertPool, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("CA bundle: %w", err)
	}
	if !pool.AppendCertsFromPEM(b) {
		return fmt.Errorf("CA bundle %s: no PEM certificate in it", file)
	}
	return nil
}

// transport is the round tripper for host: the shared one, or one with
// the host's TLS, made at its first pull after each (re)configuration. A
// configuration that cannot be read fails every request to the host,
// saying why.
func (s *Store) transport(host string) http.RoundTripper {
	c := s.config()
	c.mu.Lock()
	defer c.mu.Unlock()
	if rt, ok := c.transports[host]; ok {
		return rt
	}
	var rt http.RoundTripper = c.rt
	switch cfg, err := hostTLS(c.Registries, c.CertsDirs, host); {
	case err != nil:
		rt = failingTransport{err}
	case cfg != nil:
		t := newTransport()
		t.TLSClientConfig = cfg
		rt = t
	}
	c.transports[host] = rt
	return rt
}

// byHost sends each request through the transport of the host it goes
// to: a registry's TLS settings are not those of its token server or of
// the storage its blobs redirect to, which get the system's defaults.
type byHost struct{ s *Store }

func (b byHost) RoundTrip(req *http.Request) (*http.Response, error) {
	return b.s.transport(req.URL.Host).RoundTrip(req)
}

type failingTransport struct{ err error }

func (f failingTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, f.err }
