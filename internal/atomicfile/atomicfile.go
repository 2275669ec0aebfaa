// Package atomicfile replaces files whole: a reader, or the daemon after a
// crash, finds the old content or the new, never part of either.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Options say where the new content is written first and how durable the
// replacement is.
type Options struct {
	// TempDir holds the new content until it is renamed over the file: on
	// the file's filesystem; the file's directory if empty.
	TempDir string
	// Durable syncs the new file and then its directory, so that the
	// replacement outlives a power loss. Without it the replacement
	// outlives a crash of the process only (the page cache stays), which
	// is all that a record of namespaces, mounts or processes needs:
	// those do not outlive a power loss either, and a disk flush on every
	// write would cost RunPodSandbox and StartContainer their latency.
	Durable bool
}

// Write replaces path with data, with the permissions perm.
func Write(path string, data []byte, perm os.FileMode, o Options) (err error) {
	dir := o.TempDir
	if dir == "" {
		dir = filepath.Dir(path)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if o.Durable {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if o.Durable {
		// The rename is durable only once the directory is.
		return SyncDir(filepath.Dir(path))
	}
	return nil
}

// SyncDir makes what was renamed or created in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}
