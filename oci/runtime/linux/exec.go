package linux

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// Exec is `husk exec-init -- COMMAND...`, started by `husk exec-enter`
// inside a running container's namespaces and cgroup. It takes the
// container's user, capabilities, no_new_privs, resource limits, seccomp,
// environment and working directory from its spec (on the descriptor
// monitor.EnvExecSpecFD names) and executes COMMAND. It returns only on failure, with the exit code a
// shell gives: 127 for a command not found, 126 otherwise.
func Exec(args []string) int {
	if len(args) < 2 || args[0] != "--" {
		_, _ = fmt.Fprintln(os.Stderr, "usage: husk exec-init -- COMMAND...")
		return 126
	}
	err := execInContainer(args[1:])
	_, _ = fmt.Fprintf(os.Stderr, "husk exec: %v\n", err)
	var nf errNotFound
	if errors.As(err, &nf) {
		return 127
	}
	return 126
}

type errNotFound struct{ error }

func execInContainer(cmd []string) error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return err
	}
	fd, err := strconv.Atoi(os.Getenv(monitor.EnvExecSpecFD))
	if err != nil {
		return errors.New("no spec descriptor")
	}
	f := os.NewFile(uintptr(fd), "spec")
	var spec specs.Spec
	err = json.NewDecoder(f).Decode(&spec)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("reading the container's spec: %w", err)
	}
	if spec.Process == nil || spec.Linux == nil {
		return errors.New("the spec has no process or linux section")
	}
	// The terminal first: what goes wrong next is said on it, and the
	// exit code (127 for a command not found) reaches the client.
	if err := setupConsole(spec.Process.User.UID); err != nil {
		return err
	}
	if err := os.Chdir(spec.Process.Cwd); err != nil {
		return fmt.Errorf("changing to the working directory %s: %w", spec.Process.Cwd, err)
	}
	path, err := lookPath(cmd, spec.Process.Env)
	if err != nil {
		return errNotFound{err}
	}
	// While root: raising a hard limit takes CAP_SYS_RESOURCE.
	if err := setRlimits(spec.Process.Rlimits); err != nil {
		return err
	}
	if err := becomeContainerProcess(&spec, nil); err != nil {
		return err
	}
	err = unix.Exec(path, cmd, spec.Process.Env)
	return fmt.Errorf("executing %s: %w", cmd[0], err)
}
