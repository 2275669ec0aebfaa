// Package monitor is the daemon's side of its contract with the container
// monitor (oci/runtime/shim/monitor.c, a C program): the files it writes
// in a container's state directory and how to read them, the attach
// protocol, and what the programs it starts find in their environment.
// The C side is oci/runtime/shim/contract.h; shim's tests check that the
// two agree.
package monitor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Files in a container's state directory. The monitor writes the first
// four; the daemon opens the monitor's stderr and names the runtime's pid
// file.
const (
	PIDFile        = "pid"         // "PID STARTTIME" of the program, once it runs
	ExitFile       = "exit"        // "CODE FINISHED_NS OOM" when it has ended
	SelfFile       = "monitor"     // "PID STARTTIME" of the monitor itself
	AttachSocket   = "attach"      // the attach socket, while the program runs
	ErrFile        = "monitor.err" // the monitor's stderr
	RuntimePIDFile = "runtime.pid" // a runc-compatible runtime's --pid-file
)

// The attach protocol (unix seqpacket): each message's first byte.
const (
	AttachHello  byte = 'a' // then 1 if the client brings input
	AttachInput  byte = 'i' // then input for the program
	AttachClose  byte = 'c' // the client's input ended
	AttachResize byte = 'r' // then width and height, two uint16 in host order
	AttachStdout byte = '1' // then output (stdout, or the terminal)
	AttachStderr byte = '2' // then output on stderr
)

// The daemon's answer on --cgroup-sync once it has placed the program in
// its cgroup, or refused to.
const (
	PlacedGo      byte = '1'
	PlacedRefused byte = '0'
)

// Environment of the programs the monitor and the pod init start.
const (
	EnvCgroupFD  = "HUSK_CGROUP_FD"  // tells the runtime it is in its cgroup
	EnvConsoleFD = "HUSK_CONSOLE_FD" // a unix socket to send the terminal on
	EnvPodUserns = "HUSK_POD_USERNS" // the user namespace a pod init joins
)

// Environment of an exec's programs (husk-runtime exec-enter and
// exec-init), which the daemon starts and the Go runtime reads: no C side.
const (
	EnvExecSpecFD  = "HUSK_EXEC_SPEC_FD" // the container's spec, for the command's user and working directory
	EnvConsoleSync = "HUSK_CONSOLE_SYNC" // with EnvConsoleFD: wait for the socket's close, then run the command
)

// ReadProcessFile reads a "PID STARTTIME" file (PIDFile, SelfFile). A
// file that is not complete yet is an error, as is a missing one.
func ReadProcessFile(path string) (pid int, startTime uint64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("malformed process file %s: %q", path, b)
	}
	if pid, err = strconv.Atoi(f[0]); err != nil || pid <= 0 {
		return 0, 0, fmt.Errorf("malformed process file %s: pid %q", path, f[0])
	}
	if startTime, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("malformed process file %s: start time %q", path, f[1])
	}
	return pid, startTime, nil
}

// Exit is what ExitFile records.
type Exit struct {
	Code       int32
	FinishedAt int64 // ns since the epoch
	OOMKilled  bool
}

// ReadExit reads the container's ExitFile in dir.
func ReadExit(dir string) (Exit, error) {
	b, err := os.ReadFile(filepath.Join(dir, ExitFile))
	if err != nil {
		return Exit{}, err
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return Exit{}, fmt.Errorf("malformed exit file in %s: %q", dir, b)
	}
	code, err := strconv.ParseInt(f[0], 10, 32)
	if err != nil {
		return Exit{}, fmt.Errorf("malformed exit file in %s: code %q", dir, f[0])
	}
	finished, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return Exit{}, fmt.Errorf("malformed exit file in %s: finish time %q", dir, f[1])
	}
	oom, err := strconv.Atoi(f[2])
	if err != nil {
		return Exit{}, fmt.Errorf("malformed exit file in %s: OOM %q", dir, f[2])
	}
	return Exit{Code: int32(code), FinishedAt: finished, OOMKilled: oom != 0}, nil
}
