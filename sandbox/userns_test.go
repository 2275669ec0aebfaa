package sandbox

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestUsernsMappings(t *testing.T) {
	one := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 1 << 20, Length: 65536}}
	for name, tc := range map[string]struct {
		opts    *runtimeapi.NamespaceOption
		mapped  bool
		invalid bool
	}{
		// POD is the zero mode: no message is the host's namespace.
		"no options":          {opts: nil},
		"no userns_options":   {opts: &runtimeapi.NamespaceOption{}},
		"NODE":                {opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}}},
		"NODE with mappings":  {opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE, Uids: one, Gids: one}}, invalid: true},
		"POD":                 {opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Uids: one, Gids: one}}, mapped: true},
		"POD without ranges":  {opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{}}, invalid: true},
		"POD, gids missing":   {opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Uids: one}}, invalid: true},
		"POD past 32 bits":    {opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Uids: []*runtimeapi.IDMapping{{HostId: 1<<32 - 10, Length: 65536}}, Gids: one}}, invalid: true},
		"POD with host IPC":   {opts: &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE, UsernsOptions: &runtimeapi.UserNamespace{Uids: one, Gids: one}}, invalid: true},
		"POD with shared PID": {opts: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD, UsernsOptions: &runtimeapi.UserNamespace{Uids: one, Gids: one}}, mapped: true},
	} {
		uids, gids, err := usernsMappings(tc.opts)
		if tc.invalid != errdefs.IsInvalidArgument(err) || (!tc.invalid && err != nil) {
			t.Errorf("%s: %v", name, err)
		}
		if tc.mapped != (uids != nil && gids != nil) {
			t.Errorf("%s: mappings %v %v", name, uids, gids)
		}
	}
}

// removeTree stops at a mount point: what a volume still mounted below a
// bundle holds is never deleted.
func TestRemoveTreeDoesNotCrossMounts(t *testing.T) {
	dir := t.TempDir()
	vol, mnt := filepath.Join(dir, "volume"), filepath.Join(dir, "bundle", "mounts", "0")
	for _, d := range []string{vol, mnt} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(vol, "precious"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(vol, mnt, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) }()
	if err := removeTree(filepath.Join(dir, "bundle")); err == nil {
		t.Error("removeTree went through a mount point")
	}
	if _, err := os.Stat(filepath.Join(vol, "precious")); err != nil {
		t.Errorf("the volume's file: %v", err)
	}
	if err := unmountBundle(filepath.Join(dir, "bundle")); err != nil {
		t.Fatal(err)
	}
	if err := removeTree(filepath.Join(dir, "bundle")); err != nil {
		t.Errorf("after unmounting: %v", err)
	}
	if _, err := os.Stat(filepath.Join(vol, "precious")); err != nil {
		t.Errorf("the volume's file after the removal: %v", err)
	}
}
