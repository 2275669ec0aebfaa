package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

func writeTLSFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// pullWith pulls ref into a new store configured with regs and
// certsDirs.
func pullWith(t *testing.T, ref string, regs map[string]RegistryConfig, certsDirs []string) error {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "images"), Options{Registries: regs, CertsDirs: certsDirs})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	_, err = s.Pull(t.Context(), ref, nil)
	return err
}

// A registry serving TLS from a CA of its own: a pull is refused until the
// CA is trusted, by the host's ca, by a certs directory in Docker's layout
// or by skip_verify.
func TestPullOverTLSTrustsOnlyWhatItIsTold(t *testing.T) {
	ca := imagetest.NewCA(t)
	reg := imagetest.NewRegistry(t, imagetest.WithTLS(ca, false))
	reg.Push(t, "test/tls:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "x"))))
	ref := reg.Ref("test/tls:1")
	dir := t.TempDir()
	caFile := writeTLSFile(t, dir, "ca.pem", ca.PEM)

	if err := pullWith(t, ref, nil, nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("pull from a registry whose CA is not trusted: %v, want a certificate error", err)
	}
	if err := pullWith(t, ref, map[string]RegistryConfig{reg.Host: {CA: caFile}}, nil); err != nil {
		t.Errorf("with ca: %v", err)
	}
	certs := filepath.Join(dir, "certs.d")
	writeTLSFile(t, filepath.Join(certs, reg.Host), "ca.crt", ca.PEM)
	if err := pullWith(t, ref, nil, []string{filepath.Join(dir, "empty"), certs}); err != nil {
		t.Errorf("with the CA in a certs directory: %v", err)
	}
	if err := pullWith(t, ref, map[string]RegistryConfig{reg.Host: {SkipVerify: true}}, nil); err != nil {
		t.Errorf("with skip_verify: %v", err)
	}
	other := imagetest.NewCA(t)
	otherFile := writeTLSFile(t, dir, "other.pem", other.PEM)
	if err := pullWith(t, ref, map[string]RegistryConfig{reg.Host: {CA: otherFile}}, nil); err == nil {
		t.Error("pulled trusting another CA")
	}
}

// Mutual TLS: the registry serves only clients with a certificate of its
// CA, given by client_cert and client_key or a certs directory.
func TestPullWithClientCertificate(t *testing.T) {
	ca := imagetest.NewCA(t)
	reg := imagetest.NewRegistry(t, imagetest.WithTLS(ca, true))
	reg.Push(t, "test/mtls:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "x"))))
	ref := reg.Ref("test/mtls:1")
	dir := t.TempDir()
	caFile := writeTLSFile(t, dir, "ca.pem", ca.PEM)
	node := ca.Client(t, "node")
	certFile := writeTLSFile(t, dir, "node.pem", node.CertPEM)
	keyFile := writeTLSFile(t, dir, "node-key.pem", node.KeyPEM)

	if err := pullWith(t, ref, map[string]RegistryConfig{reg.Host: {CA: caFile}}, nil); err == nil {
		t.Error("pulled without a client certificate")
	}
	if err := pullWith(t, ref, map[string]RegistryConfig{reg.Host: {CA: caFile, ClientCert: certFile, ClientKey: keyFile}}, nil); err != nil {
		t.Errorf("with client_cert and client_key: %v", err)
	}
	certs := filepath.Join(dir, "certs.d")
	hostDir := filepath.Join(certs, reg.Host)
	writeTLSFile(t, hostDir, "ca.crt", ca.PEM)
	writeTLSFile(t, hostDir, "client.cert", node.CertPEM)
	writeTLSFile(t, hostDir, "client.key", node.KeyPEM)
	if err := pullWith(t, ref, nil, []string{certs}); err != nil {
		t.Errorf("with a certs directory: %v", err)
	}
}

// The config's TLS files are read when it is checked: a wrong path is
// found when the daemon starts.
func TestRegistryTLSConfigIsChecked(t *testing.T) {
	dir := t.TempDir()
	notPEM := writeTLSFile(t, dir, "not.pem", []byte("hello"))
	for name, rc := range map[string]RegistryConfig{
		"missing CA":       {CA: filepath.Join(dir, "nosuch.pem")},
		"CA not PEM":       {CA: notPEM},
		"cert without key": {ClientCert: notPEM},
		"bad pair":         {ClientCert: notPEM, ClientKey: notPEM},
	} {
		if err := ValidateRegistries(map[string]RegistryConfig{"r.example": rc}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
