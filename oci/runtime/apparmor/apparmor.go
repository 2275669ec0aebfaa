// Package apparmor is what the daemon knows of AppArmor: whether the host
// enforces it, and which profiles are loaded. The runtime default profile,
// "husk-default", is generated and loaded by github.com/moby/profiles/apparmor
// (Docker's docker-default, under husk's name) the first time a container
// needs it. The runtime applies a profile to a container's process
// (oci/runtime/linux).
package apparmor

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	moby "github.com/moby/profiles/apparmor"
)

// DefaultProfile is the name of husk's runtime default profile.
const DefaultProfile = "husk-default"

// Enabled reports whether the kernel enforces AppArmor on this host (the
// module is on and its filesystem is there to load profiles through).
func Enabled() bool {
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	if err != nil || !strings.HasPrefix(string(b), "Y") {
		return false
	}
	_, err = os.Stat("/sys/kernel/security/apparmor/profiles")
	return err == nil
}

var installMu sync.Mutex

// Ensure checks that the profile a container is to run under is loaded,
// loading the runtime default one when it is not (after a reboot, or if
// someone removed it). A profile that is not loaded is the node's state:
// errdefs.ErrFailedPrecondition.
func Ensure(name string) error {
	loaded, err := moby.IsLoaded(name)
	if err != nil {
		return fmt.Errorf("reading the loaded AppArmor profiles: %w", err)
	}
	if loaded {
		return nil
	}
	if name != DefaultProfile {
		return fmt.Errorf("AppArmor profile %q is not loaded on this node: %w", name, errdefs.ErrFailedPrecondition)
	}
	installMu.Lock()
	defer installMu.Unlock()
	if loaded, err := moby.IsLoaded(name); err == nil && loaded {
		return nil
	}
	if err := moby.InstallDefault(name); err != nil {
		return fmt.Errorf("loading the runtime default AppArmor profile %s (apparmor_parser): %w", name, err)
	}
	return nil
}
