package shim

import (
	"slices"
	"testing"

	"github.com/husk-runtime/husk/oci/runtime/execserver"
	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// TestContractAgrees: the C programs and the daemon use the same file
// names, environment and protocol bytes.
func TestContractAgrees(t *testing.T) {
	strs, bytes := contract()
	wantStrs := []string{monitor.PIDFile, monitor.ExitFile, monitor.SelfFile, monitor.AttachSocket,
		monitor.EnvCgroupFD, monitor.EnvConsoleFD, monitor.EnvPodUserns}
	wantBytes := []byte{monitor.AttachHello, monitor.AttachInput, monitor.AttachClose, monitor.AttachResize,
		monitor.AttachStdout, monitor.AttachStderr, monitor.PlacedGo, monitor.PlacedRefused}
	if !slices.Equal(strs, wantStrs) {
		t.Errorf("contract.h's names %q, package monitor's %q", strs, wantStrs)
	}
	if !slices.Equal(bytes, wantBytes) {
		t.Errorf("contract.h's bytes %q, package monitor's %q", bytes, wantBytes)
	}
	wantNumbers := []int{execserver.KindExec, execserver.KindKill, execserver.NumFDs, execserver.MaxCgroups,
		execserver.MaxArgs, execserver.MaxMessage, execserver.MaxRunning, execserver.RequestSize}
	if got := execServerContract(); !slices.Equal(got, wantNumbers) {
		t.Errorf("contract.h's exec server numbers %v, package execserver's %v", got, wantNumbers)
	}
}
