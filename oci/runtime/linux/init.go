// Package linux is husk's built-in runtime: it turns an OCI runtime spec
// into a running process, with no other binary.
//
// The container's first process starts as `husk container-init BUNDLE`,
// started by the container monitor already inside the pod's network, IPC
// and UTS namespaces and in new mount (and PID) namespaces. Init reads the
// bundle's config.json, joins its cgroup, builds the root filesystem and
// pivots into it, becomes the container's user with its capabilities,
// seccomp filter and limits, then executes the container's command in its
// own place. It reports any failure on descriptor 3, which the exec closes.
package linux

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// reportFD is where init reports failures; the monitor passes it on from
// the daemon, which reads it until the exec closes it.
const reportFD = 3

// ReportBadCommand starts a report whose cause is the container's command
// itself (not in the image, not executable): the daemon answers
// InvalidArgument naming config.command, not a failure of its own.
const ReportBadCommand = "config.command: "

// errBadCommand marks lookPath's failures.
var errBadCommand = errors.New("bad command")

// Init is `husk container-init BUNDLE`. It returns only on failure.
func Init(args []string) int {
	report := os.NewFile(reportFD, "report")
	if len(args) != 1 {
		_, _ = fmt.Fprintln(report, "usage: husk container-init BUNDLE")
		return 2
	}
	err := initContainer(args[0])
	msg := err.Error()
	if errors.Is(err, errBadCommand) {
		msg = ReportBadCommand + strings.TrimSuffix(msg, ": "+errBadCommand.Error())
	}
	_, _ = fmt.Fprint(report, msg)
	return 1
}

func initContainer(bundle string) error {
	// Until the exec, nothing in the container may look into this process
	// (its memory, /proc/self/exe: CVE-2019-5736).
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return fmt.Errorf("reading the spec: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("reading the spec: %w", err)
	}
	if spec.Process == nil || spec.Root == nil || spec.Linux == nil {
		return errors.New("the spec has no process, root or linux section")
	}
	// The seccomp filter the daemon compiled into the exec profile, from
	// the same spec: libseccomp takes ~20 ms to compile the default one.
	var program []byte
	if spec.Linux.Seccomp != nil {
		program = profileProgram(filepath.Join(bundle, ExecProfileName))
	}
	// The monitor moves this process into the container's cgroup while it
	// sets the container up, and says when it is done.
	if err := waitForCgroup(); err != nil {
		return err
	}
	for _, n := range spec.Linux.Namespaces {
		// A cgroup namespace made after joining the cgroup: the container
		// sees its cgroup as the root.
		if n.Type == specs.CgroupNamespace && n.Path == "" {
			if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
				return fmt.Errorf("creating the cgroup namespace: %w", err)
			}
		}
	}
	// /proc/self is still this process's own here: what is written through
	// it is written before any mount of the container could shadow it.
	if err := setRlimits(spec.Process.Rlimits); err != nil {
		return err
	}
	if err := setOOMScoreAdj(spec.Process.OOMScoreAdj); err != nil {
		return err
	}
	rootfs := spec.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(bundle, rootfs)
	}
	if err := setupRootfs(&spec, rootfs); err != nil {
		return err
	}
	if err := setupConsole(spec.Process.User.UID); err != nil {
		return err
	}
	if err := os.Chdir(spec.Process.Cwd); err != nil {
		return fmt.Errorf("changing to the working directory %s: %w", spec.Process.Cwd, err)
	}
	path, err := lookPath(spec.Process.Args, spec.Process.Env)
	if err != nil {
		return fmt.Errorf("%w: %w", err, errBadCommand)
	}
	if err := becomeContainerProcess(&spec, program); err != nil {
		return err
	}
	err = unix.Exec(path, spec.Process.Args, spec.Process.Env)
	return fmt.Errorf("executing %s: %w", spec.Process.Args[0], err)
}

// becomeContainerProcess is the last step before the exec of a container's
// process, its first or one ExecSync starts: no descriptor of the host
// reaches the container (all but 0, 1 and 2 close on exec; close_range
// needs no /proc, which a mount could hide), and the process takes the
// container's AppArmor profile, seccomp filter, user, capabilities and
// no_new_privs.
//
// The kernel takes a seccomp filter only from a process with no_new_privs
// or CAP_SYS_ADMIN. With no_new_privs the filter comes last, after the
// steps it may forbid; without, it must come while the capabilities are
// still there (as runc does).
//
// program is the filter compiled (from the exec profile), nil to compile
// it here.
func becomeContainerProcess(spec *specs.Spec, program []byte) error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("close_range: %w", err)
	}
	// Before no_new_privs and the seccomp filter, which may forbid it.
	if err := applyAppArmor(spec.Process.ApparmorProfile); err != nil {
		return err
	}
	if !spec.Process.NoNewPrivileges {
		if err := loadSeccomp(spec.Linux.Seccomp, program); err != nil {
			return err
		}
	}
	if err := becomeUser(spec.Process); err != nil {
		return err
	}
	if spec.Process.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("setting no_new_privs: %w", err)
		}
		return loadSeccomp(spec.Linux.Seccomp, program)
	}
	return nil
}

// lookPath finds the command in the container's PATH, as execvp would, so
// that a missing command is reported before the process is given up.
func lookPath(args, env []string) (string, error) {
	if len(args) == 0 || args[0] == "" {
		return "", errors.New("the spec has no command")
	}
	cmd := args[0]
	if strings.Contains(cmd, "/") {
		return cmd, checkExecutable(cmd)
	}
	pathVar := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathVar = v
		}
	}
	for _, dir := range filepath.SplitList(pathVar) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, cmd)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable %q not found in $PATH (%s)", cmd, pathVar)
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("executable %q: %w", p, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%q is not an executable file", p)
	}
	return nil
}

func setRlimits(rl []specs.POSIXRlimit) error {
	limits, err := rlimits(rl)
	if err != nil {
		return err
	}
	for i, l := range limits {
		if err := unix.Setrlimit(int(l.Resource), &unix.Rlimit{Cur: l.Soft, Max: l.Hard}); err != nil {
			return fmt.Errorf("setting %s: %w", rl[i].Type, err)
		}
	}
	return nil
}

// rlimits is the spec's resource limits by number, as setrlimit and the
// exec profile take them.
func rlimits(rl []specs.POSIXRlimit) ([]profileRlimit, error) {
	out := make([]profileRlimit, 0, len(rl))
	for _, r := range rl {
		res, ok := rlimitNames[r.Type]
		if !ok {
			return nil, fmt.Errorf("unknown rlimit %q", r.Type)
		}
		out = append(out, profileRlimit{Resource: uint32(res), Soft: r.Soft, Hard: r.Hard})
	}
	return out, nil
}

var rlimitNames = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

// waitForCgroup waits for the monitor to say, on the descriptor named by
// monitor.EnvCgroupFD, that this process is in the container's cgroup.
func waitForCgroup() error {
	v := os.Getenv(monitor.EnvCgroupFD)
	if v == "" {
		return nil // a monitor that manages no cgroup
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return fmt.Errorf("%s=%q", monitor.EnvCgroupFD, v)
	}
	f := os.NewFile(uintptr(fd), "cgroup-ready")
	defer func() { _ = f.Close() }()
	var b [1]byte
	if n, err := f.Read(b[:]); n != 1 {
		return fmt.Errorf("the monitor did not move the container into its cgroup: %v", err)
	}
	return nil
}

// setOOMScoreAdj sets the process's oom_score_adj unless it has it
// already: husk's monitor sets it before the runtime goes on, which in a
// pod's user namespace cannot (its /proc files are the host root's).
func setOOMScoreAdj(want *int) error {
	if want == nil {
		return nil
	}
	if b, err := os.ReadFile("/proc/self/oom_score_adj"); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(*want) {
		return nil
	}
	if err := os.WriteFile("/proc/self/oom_score_adj", fmt.Appendf(nil, "%d", *want), 0); err != nil {
		return fmt.Errorf("setting oom_score_adj: %w", err)
	}
	return nil
}
