// The C programs' side of their contract with the daemon. The Go side is
// packages oci/runtime/monitor and oci/runtime/execserver, whose constants
// must be these (shim's TestContractAgrees compares them).
#ifndef HUSK_CONTRACT_H
#define HUSK_CONTRACT_H

#include <stdint.h>

// Files the monitor writes in the container's state directory.
#define STATE_PID "pid"         // "PID STARTTIME" of the program, once it runs
#define STATE_EXIT "exit"       // "CODE FINISHED_NS OOM" when it has ended
#define STATE_MONITOR "monitor" // "PID STARTTIME" of the monitor itself
#define STATE_ATTACH "attach"   // the attach socket, while the program runs

// The attach protocol: the first byte of each message says what it is.
#define ATTACH_HELLO 'a'  // then 1 if the client brings input
#define ATTACH_INPUT 'i'  // then input for the program
#define ATTACH_CLOSE 'c'  // the client's input ended
#define ATTACH_RESIZE 'r' // then width and height, two uint16 in host order
#define ATTACH_STDOUT '1' // then output (stdout, or the terminal)
#define ATTACH_STDERR '2' // then output on stderr

// The daemon's answer once it placed the program in its cgroup
// (--cgroup-sync), and the monitor's to another runtime waiting for it.
#define PLACED_GO '1'
#define PLACED_REFUSED '0'

// What the programs the monitor and pod init start find in their
// environment: the descriptor on which the runtime hears that it is in
// its cgroup, the unix socket on which it sends the terminal, and the
// pod's user namespace a pod init joins.
#define ENV_CGROUP_FD "HUSK_CGROUP_FD"
#define ENV_CONSOLE_FD "HUSK_CONSOLE_FD"
#define ENV_POD_USERNS "HUSK_POD_USERNS"

// The exec server's requests (exec_server.c; package execserver): a
// struct exec_request, then for an exec its NUL-terminated strings, the
// cgroups' procs files then the command, with the descriptors of its
// stdin, stdout, stderr, the exec profile and the status pipe.
#define EXEC_SERVER_EXEC 'x'
#define EXEC_SERVER_KILL 'k'
#define EXEC_SERVER_FDS 5
#define EXEC_SERVER_MAX_CGROUPS 64
#define EXEC_SERVER_MAX_ARGS 4096
#define EXEC_SERVER_MAX_MESSAGE (128 << 10)
#define EXEC_SERVER_MAX_RUNNING 1024
struct exec_request {
	char kind;
	char pad[3];
	uint32_t id; // the daemon's for an exec, which a kill names
	int32_t pid; // the container's first process
	uint32_t ncgroups, nargs;
};

// The monitor's command line (package monitor's Args, monitor_args.c):
// `husk-runtime monitor FLAGS -- PROGRAM...`.
#define MAX_CGROUPS 64
struct monitor_args {
	const char *state, *log_dir, *log_path;
	const char *oom, *oom_parent;
	int oom_notify;
	const char *netns, *ipcns, *utsns, *pidns, *userns;
	int newpid;
	int exec_fd; // -1: none
	const char *cgroups[MAX_CGROUPS];
	int ncgroups;
	int cgroup_sync; // -1: none
	const char *oom_score_adj; // NULL: none
	const char *runtime_pid_file;
	int tty, with_stdin, stdin_once;
	char **prog; // NULL-terminated
};

// parse_monitor_args reads argv (argv[0] is "monitor") into a; -1 for a
// command line the monitor cannot run.
int parse_monitor_args(int argc, char **argv, struct monitor_args *a);

#endif
