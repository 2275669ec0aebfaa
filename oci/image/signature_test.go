package image

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/husk-runtime/husk/test/imagetest"
)

// signer is a key pair a test makes, as `cosign generate-key-pair` would.
type signer struct {
	sv     signature.SignerVerifier
	pubPEM []byte
}

func newSigner(t *testing.T) signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadECDSASignerVerifier(key, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := cryptoutils.MarshalPublicKeyToPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return signer{sv: sv, pubPEM: pub}
}

// signature is the artifact `cosign sign --key` pushes for the image of
// manifest digest d in repository repo: one simple-signing layer with its
// signature as an annotation.
func (s signer) signature(t *testing.T, repo string, d v1.Hash) v1.Image {
	t.Helper()
	var p payload.SimpleContainerImage
	p.Critical.Type = payload.CosignSignatureType
	p.Critical.Identity.DockerReference = repo
	p.Critical.Image.DockerManifestDigest = d.String()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.sv.SignMessage(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:       static.NewLayer(b, cosignPayloadType),
		Annotations: map[string]string{cosignSignatureAnnot: base64.StdEncoding.EncodeToString(sig)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func sigTag(d v1.Hash) string { return d.Algorithm + "-" + d.Hex + ".sig" }

// A repository whose policy requires a signature takes only images a key
// of the policy signed (by the .sig tag or as a referrer, of that very
// digest); anything else is FailedPrecondition and nothing is stored. A
// rejected repository takes nothing; others take anything.
func TestSignaturePolicy(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	trusted, other := newSigner(t), newSigner(t)
	keyFile := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(keyFile, trusted.pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	push := func(repoTag, content string) v1.Hash {
		return reg.Push(t, repoTag, imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", content))))
	}
	d := push("signed/app:1", "app")
	reg.Push(t, "signed/app:"+sigTag(d), trusted.signature(t, reg.Host+"/signed/app", d))
	push("signed/unsigned:1", "unsigned")
	d = push("signed/stranger:1", "stranger")
	reg.Push(t, "signed/stranger:"+sigTag(d), other.signature(t, reg.Host+"/signed/stranger", d))
	d = push("signed/copied:1", "copied")
	// A valid signature, of another image, under this one's tag.
	reg.Push(t, "signed/copied:"+sigTag(d), trusted.signature(t, reg.Host+"/signed/app", d))
	// A signature artifact with no signature in it.
	d = push("signed/hollow:1", "hollow")
	reg.Push(t, "signed/hollow:"+sigTag(d), empty.Image)
	referred := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "referred")))
	d = reg.Push(t, "signed/referred:1", referred)
	subject, err := partial.Descriptor(referred)
	if err != nil {
		t.Fatal(err)
	}
	referrer := mutate.ConfigMediaType(trusted.signature(t, reg.Host+"/signed/referred", d), types.MediaType(cosignSigArtifactType))
	reg.Push(t, "signed/referred:attached", mutate.Subject(referrer, *subject).(v1.Image))
	push("banned/app:1", "banned")
	push("open/app:1", "open")

	regs := insecure(reg.Host)
	s, err := Open(filepath.Join(t.TempDir(), "images"), Options{Registries: regs, SignaturePolicy: map[string]PolicyConfig{
		reg.Host + "/signed": {Mode: "signed", Keys: []string{keyFile}},
		reg.Host + "/banned": {Mode: "reject"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	for ref, ok := range map[string]bool{
		"signed/app:1": true, "signed/referred:1": true, "open/app:1": true,
		"signed/unsigned:1": false, "signed/stranger:1": false, "signed/copied:1": false, "signed/hollow:1": false,
		"banned/app:1": false,
	} {
		_, err := s.Pull(t.Context(), reg.Ref(ref), nil)
		switch {
		case ok && err != nil:
			t.Errorf("%s: %v", ref, err)
		case !ok && !errdefs.IsFailedPrecondition(err):
			t.Errorf("%s: %v, want FailedPrecondition", ref, err)
		}
	}
	if n := len(s.List()); n != 3 {
		t.Errorf("%d images stored, want the 3 the policy accepts", n)
	}
}
