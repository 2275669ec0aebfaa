package image

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// Signature policy: per registry or repository, images are accepted as
// they are (the default), rejected, or accepted only with a cosign
// signature by one of the policy's public keys. A signature is what
// `cosign sign --key` makes: a "simple signing" payload naming the image's
// manifest digest, signed, kept as a layer of an artifact found by the tag
// sha256-<hex>.sig or as an OCI 1.1 referrer of the image. The payload
// and key handling are sigstore's (github.com/sigstore/sigstore); finding
// the signature is written here, since cosign's own library would bring
// in far more than this check needs.

// PolicyConfig is the policy of one scope: "*" (every image), a registry
// host, or a host with a repository path.
type PolicyConfig struct {
	// Mode is "accept", "reject" or "signed".
	Mode string `toml:"mode"`
	// Keys are PEM public keys (cosign.pub) of which one must have
	// signed the image, for "signed".
	Keys []string `toml:"keys"`
}

// The media type and annotation of a cosign signature's layer, and the
// artifact type of a signature attached as a referrer.
const (
	cosignPayloadType     = "application/vnd.dev.cosign.simplesigning.v1+json"
	cosignSignatureAnnot  = "dev.cosignproject.cosign/signature"
	cosignSigArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"
)

// policy is a PolicyConfig with its keys loaded.
type policy struct {
	scope     string
	mode      string
	verifiers []signature.Verifier
}

// loadPolicies checks and loads the signature policies, by normalized
// scope (scope.go; "*" for every image).
func loadPolicies(cfgs map[string]PolicyConfig) (map[string]*policy, error) {
	out := map[string]*policy{}
	for scope, c := range cfgs {
		field := fmt.Sprintf("signature_policy.%q", scope)
		if scope != "*" {
			norm, err := normalizeScope(scope)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", field, err)
			}
			if _, dup := out[norm]; dup {
				return nil, fmt.Errorf("%s: the same scope as another (%s)", field, norm)
			}
			scope = norm
		}
		p := &policy{scope: scope, mode: c.Mode}
		switch c.Mode {
		case "accept", "reject":
			if len(c.Keys) > 0 {
				return nil, fmt.Errorf("%s: keys go with mode \"signed\"", field)
			}
		case "signed":
			if len(c.Keys) == 0 {
				return nil, fmt.Errorf("%s: mode \"signed\" needs keys", field)
			}
			for _, k := range c.Keys {
				v, err := loadVerifier(k)
				if err != nil {
					return nil, fmt.Errorf("%s: key %s: %w", field, k, err)
				}
				p.verifiers = append(p.verifiers, v)
			}
		default:
			return nil, fmt.Errorf("%s: mode %q is not \"accept\", \"reject\" or \"signed\"", field, c.Mode)
		}
		out[scope] = p
	}
	return out, nil
}

// ValidatePolicies checks the signature_policy settings, for the config
// loader: modes, and keys that are read now.
func ValidatePolicies(cfgs map[string]PolicyConfig) error {
	_, err := loadPolicies(cfgs)
	return err
}

func loadVerifier(file string) (signature.Verifier, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(b)
	if err != nil {
		return nil, err
	}
	return signature.LoadVerifier(pub, crypto.SHA256)
}

// policyFor is the policy of named: the longest scope that holds it, else
// "*", else nil (accept).
func policyFor(policies map[string]*policy, named reference.Named) *policy {
	if scope, ok := longestScope(repoOf(named), maps.Keys(policies)); ok {
		return policies[scope]
	}
	return policies["*"]
}

// checkPolicy refuses named, whose manifest (or index) is top, unless its
// policy accepts it. opts reach the endpoint the image comes from, where
// its signatures are looked for.
func (s *Store) checkPolicy(named reference.Named, repo name.Repository, top digest.Digest, opts []remote.Option) error {
	p := policyFor(s.config().policies, named)
	if p == nil || p.mode == "accept" {
		return nil
	}
	if p.mode == "reject" {
		return fmt.Errorf("image %s: the signature policy of %q rejects it: %w", named, p.scope, errdefs.ErrFailedPrecondition)
	}
	err := verifySignatures(p, named, repo, top, opts)
	if err != nil {
		return fmt.Errorf("image %s: the signature policy of %q requires a signature by one of its keys: %w: %w", named, p.scope, err, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// verifySignatures looks for a signature of top by one of p's keys, by
// the .sig tag and among top's referrers.
func verifySignatures(p *policy, named reference.Named, repo name.Repository, top digest.Digest, opts []remote.Option) error {
	var why []error
	sigs, err := signatureManifests(repo, top, opts)
	if err != nil {
		return err
	}
	for _, layers := range sigs {
		for _, l := range layers {
			err := verifyOne(p, named, top, l)
			if err == nil {
				return nil
			}
			why = append(why, err)
		}
	}
	// Signature artifacts with no signature in them are none.
	if len(why) == 0 {
		return errors.New("the image has no signature")
	}
	return errors.Join(why...)
}

// sigLayer is one signature: its payload and the signature's bytes.
type sigLayer struct {
	payload []byte
	sig     []byte
}

// signatureManifests are the signature layers found for top: those of the
// artifact tagged sha256-<hex>.sig, and of referrers of cosign's type.
func signatureManifests(repo name.Repository, top digest.Digest, opts []remote.Option) ([][]sigLayer, error) {
	var refs []name.Reference
	refs = append(refs, repo.Tag(top.Algorithm().String()+"-"+top.Encoded()+".sig"))
	if idx, err := remote.Referrers(repo.Digest(top.String()), opts...); err == nil {
		if m, err := idx.IndexManifest(); err == nil {
			for _, d := range m.Manifests {
				if d.ArtifactType == cosignSigArtifactType {
					refs = append(refs, repo.Digest(d.Digest.String()))
				}
			}
		}
	}
	var out [][]sigLayer
	for _, ref := range refs {
		img, err := remote.Image(ref, opts...)
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			continue // no such signature
		}
		if err != nil {
			return nil, registryError(err)
		}
		m, err := img.Manifest()
		if err != nil {
			return nil, registryError(err)
		}
		var layers []sigLayer
		for _, desc := range m.Layers {
			if string(desc.MediaType) != cosignPayloadType {
				continue
			}
			sig, err := base64.StdEncoding.DecodeString(desc.Annotations[cosignSignatureAnnot])
			if err != nil {
				continue
			}
			l, err := img.LayerByDigest(desc.Digest)
			if err != nil {
				return nil, registryError(err)
			}
			rc, err := l.Compressed()
			if err != nil {
				return nil, registryError(err)
			}
			// A payload is a few hundred bytes; a signature layer may not
			// make the daemon read more than this.
			b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
			_ = rc.Close()
			if err != nil {
				return nil, registryError(err)
			}
			layers = append(layers, sigLayer{payload: b, sig: sig})
		}
		out = append(out, layers)
	}
	return out, nil
}

// verifyOne checks one signature: by one of p's keys, of a payload that
// names top and named's repository.
func verifyOne(p *policy, named reference.Named, top digest.Digest, l sigLayer) error {
	signed := false
	for _, v := range p.verifiers {
		if v.VerifySignature(bytes.NewReader(l.sig), bytes.NewReader(l.payload)) == nil {
			signed = true
			break
		}
	}
	if !signed {
		return errors.New("a signature by none of the policy's keys")
	}
	var ss payload.SimpleContainerImage
	if err := json.Unmarshal(l.payload, &ss); err != nil {
		return fmt.Errorf("a signed payload that is not cosign's: %w", err)
	}
	if ss.Critical.Type != payload.CosignSignatureType {
		return fmt.Errorf("a signed payload of type %q", ss.Critical.Type)
	}
	if ss.Critical.Image.DockerManifestDigest != top.String() {
		return fmt.Errorf("a signature of another image (%s)", ss.Critical.Image.DockerManifestDigest)
	}
	// The signer's claim of the repository, tag or digest aside (cosign
	// signs a digest; older versions named the repository only).
	if ref := ss.Critical.Identity.DockerReference; ref != "" {
		claimed, err := reference.ParseNormalizedNamed(ref)
		if err != nil || claimed.Name() != named.Name() {
			return fmt.Errorf("a signature of %s for repository %q", top, ref)
		}
	}
	return nil
}
