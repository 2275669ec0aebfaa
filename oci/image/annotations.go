package image

import (
	"encoding/json"
	"maps"
	"os"
)

// Annotations are the annotations of the manifests (and index) an image
// was pulled by, merged: a checkpoint image says what it is in them.
func (s *Store) Annotations(img Image) map[string]string {
	out := map[string]string{}
	for _, d := range img.Blobs {
		b, err := os.ReadFile(s.blobPath(d))
		if err != nil {
			continue
		}
		var doc struct {
			Annotations map[string]string `json:"annotations"`
		}
		if json.Unmarshal(b, &doc) == nil {
			maps.Copy(out, doc.Annotations)
		}
	}
	return out
}
