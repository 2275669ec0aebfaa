package monitor

import "strconv"

// Descriptors the monitor is started with: the report channel, on which
// the runtime writes why it failed and whose close says the command was
// executed, then the runtime's own files (Args.Files), in order.
const (
	ReportFD     = 3
	FirstExtraFD = 4
)

// Args are the monitor's command line: `husk-runtime monitor FLAGS --
// PROGRAM...` (monitor.c parses it; shim's tests check that it reads back
// what Argv writes).
type Args struct {
	State  string // the container's state directory, where the files above go
	LogDir string // the CRI log's directory, opened once; Log is below it
	Log    string // the CRI log (os.DevNull for none)

	OOM       string // the cgroup file counting OOM kills (memory.events, or v1's memory.oom_control)
	OOMParent string // the pod's, read when systemd removed the container's first
	OOMNotify bool   // listen for OOMs on OOM (cgroup v1's eventfd) rather than count them

	// Namespaces the program starts in, joined by path; NewPID makes it a
	// PID namespace of its own instead of PIDNS.
	NetNS, IPCNS, UTSNS, PIDNS, UserNS string
	NewPID                             bool

	// ExecFD is the descriptor of the sealed husk-runtime the monitor
	// executes the program with (the built-in runtime), 0 for none: the
	// program is then an executable of its own (another runtime).
	ExecFD      int
	Cgroups     []string // cgroup.procs files the program is put in before it runs
	CgroupSync  int      // the socket on which the daemon places it instead (0: none)
	OOMScoreAdj *int     // set by the monitor, for a runtime that cannot

	// RuntimePIDFile is where another runtime writes the container's pid:
	// the process the monitor waits for should the runtime die first.
	RuntimePIDFile string

	TTY       bool
	Stdin     bool
	StdinOnce bool

	Program []string
}

// Argv is the monitor's arguments after the binary's name.
func (a Args) Argv() []string {
	argv := []string{"monitor", "--state", a.State}
	withValue := func(flag, v string) {
		if v != "" {
			argv = append(argv, flag, v)
		}
	}
	withFD := func(flag string, v int) {
		if v > 0 {
			argv = append(argv, flag, strconv.Itoa(v))
		}
	}
	withFlag := func(flag string, v bool) {
		if v {
			argv = append(argv, flag)
		}
	}
	withValue("--log-dir", a.LogDir)
	withValue("--log", a.Log)
	withValue("--oom", a.OOM)
	withValue("--oom-parent", a.OOMParent)
	withFlag("--oom-notify", a.OOMNotify)
	withValue("--userns", a.UserNS)
	withValue("--netns", a.NetNS)
	withValue("--ipcns", a.IPCNS)
	withValue("--utsns", a.UTSNS)
	withValue("--pidns", a.PIDNS)
	withFlag("--newpid", a.NewPID)
	withFD("--exec-fd", a.ExecFD)
	for _, f := range a.Cgroups {
		argv = append(argv, "--cgroup", f)
	}
	withFD("--cgroup-sync", a.CgroupSync)
	if a.OOMScoreAdj != nil {
		argv = append(argv, "--oom-score-adj", strconv.Itoa(*a.OOMScoreAdj))
	}
	withValue("--runtime-pid-file", a.RuntimePIDFile)
	withFlag("--tty", a.TTY)
	withFlag("--stdin", a.Stdin)
	withFlag("--stdin-once", a.StdinOnce)
	return append(append(argv, "--"), a.Program...)
}
