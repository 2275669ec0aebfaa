package image

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

func TestLayersBecomeDurableInTheBackground(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "test/app:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("f", "x"))))
	s := openStore(t, insecure(reg.Host))
	img := pull(t, s, reg.Ref("test/app:1"))
	s.sync.close()
	if _, err := os.Stat(filepath.Join(s.layerDir(img.Layers[0]), syncedMarker)); err != nil {
		t.Fatalf("layer not marked durable after the background sync: %v", err)
	}
}

// A layer that was not synced when the machine went down (its boot differs
// from this one) may be torn: it is dropped and its image forgotten, so it
// is pulled again. One written in this boot is only a daemon crash away
// from being synced, and is kept.
func TestUnsyncedLayerFromAnotherBootIsDropped(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "test/a:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("a", "1"))))
	reg.Push(t, "test/b:1", imagetest.Image(t, v1.Config{}, imagetest.Layer(t, file("b", "2"))))
	dir := filepath.Join(t.TempDir(), "images")
	s, err := Open(dir, Options{Registries: insecure(reg.Host)})
	if err != nil {
		t.Fatal(err)
	}
	a := pull(t, s, reg.Ref("test/a:1"))
	b := pull(t, s, reg.Ref("test/b:1"))
	_ = s.Close()

	// a: written in an earlier boot and never synced. b: this boot, not
	// synced yet (the daemon was killed before its sync).
	aDir := filepath.Join(dir, "layers", a.Layers[0].Encoded())
	bDir := filepath.Join(dir, "layers", b.Layers[0].Encoded())
	for _, d := range []string{aDir, bDir} {
		if err := os.Remove(filepath.Join(d, syncedMarker)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := readLayerMeta(aDir)
	if err != nil {
		t.Fatal(err)
	}
	m.BootID = "an-earlier-boot"
	raw, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(aDir, "meta.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(dir, Options{Registries: insecure(reg.Host)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s2.Close() }()
	if _, err := s2.Get(a.ID); err == nil {
		t.Error("image with a torn layer is still listed")
	}
	if _, err := os.Stat(aDir); !os.IsNotExist(err) {
		t.Errorf("torn layer still there: %v", err)
	}
	if _, err := s2.Get(b.ID); err != nil {
		t.Errorf("image of this boot lost: %v", err)
	}
	s2.sync.close()
	if _, err := os.Stat(filepath.Join(bDir, syncedMarker)); err != nil {
		t.Errorf("layer of this boot not synced after reopening: %v", err)
	}
	// Pulling the forgotten image again works.
	pull(t, s2, reg.Ref("test/a:1"))
}
