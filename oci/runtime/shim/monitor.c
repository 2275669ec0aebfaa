// The container monitor: `husk-runtime monitor`, one per container, the parent of
// the container's first process. It outlives the daemon: it holds the
// container's stdout and stderr and writes them to the CRI log file, and
// records how the container ended, so that a daemon that restarts finds
// both. Like the pod init it runs as a constructor before the Go runtime
// starts, which keeps it at about 2 MiB of resident memory (most of it the
// shared pages of libc and the binary) per container.
//
//   husk-runtime monitor --state DIR [--log-dir DIR] --log FILE [--oom FILE [--oom-notify]] [--oom-parent FILE]
//                [--oom-score-adj N] [--userns F] [--netns F] [--ipcns F] [--utsns F] [--pidns F | --newpid]
//                [--tty] [--stdin [--stdin-once]] [--exec-fd N] [--cgroup PROCS_FILE ... | --cgroup-sync FD]
//                [--runtime-pid-file FILE] -- PROGRAM ARGS...
//
// (monitor_args.c reads it; the daemon writes it with package monitor's Args.)
//
// It joins the pod's namespaces given (files of pinned namespaces), then
// starts PROGRAM in a new mount namespace and, with --newpid, a new PID
// namespace. With --userns the program runs as root of the pod's user
// namespace, and its new namespaces belong to that one (see
// clone_in_userns); the monitor itself stays a process of the host. With --exec-fd it runs the program from that descriptor (a
// sealed copy of husk-runtime: nothing in the container can reach the
// file on the host, CVE-2019-5736). Descriptor 3 is passed on to the
// program: the runtime reports setup errors on it and closes it by exec.
// With --cgroup it moves the program into the container's cgroup (a pid
// written to each cgroup.procs file) while the program sets the container
// up, and tells it on descriptor 5 when that is done; --oom-score-adj is
// set for the program before that. With --cgroup-sync the daemon places it
// instead (the systemd driver makes a scope with the process in it): the
// monitor writes the program's pid and a newline on FD and waits for '1'
// before letting it go; another runtime (no --exec-fd) waits for that
// before it is exec'd. With --oom naming a cgroup v2 memory.events file the
// monitor also counts OOM kills as they happen (POLLPRI), since systemd
// removes a scope's cgroup once the scope's processes are gone; should it
// be gone before the count was read, --oom-parent (the pod's memory.events,
// which counts its children's kills) tells whether one happened meanwhile.
//
// In DIR it writes "pid" (pid and start time, once the program runs) and
// "exit" (exit code, finish time in ns, OOM kill 0/1) when it ends. Log
// lines are "TIMESTAMP STREAM P|F TEXT" as kubelet reads them, split at
// 16 KiB; SIGUSR1 reopens the log file (kubelet's log rotation). With
// --log-dir, FILE is a path below that directory, opened without following
// any symlink or leaving the directory (openat2 RESOLVE_BENEATH and
// RESOLVE_NO_SYMLINKS): the log directory may be writable from a container.
//
// Attach: it listens on DIR/attach (a unix seqpacket socket, root's only)
// while the program runs. A client's first message is 'a' and one byte, 1
// if it brings input; then 'i' DATA is input for the program (with
// --stdin: a pipe to its stdin, or the terminal), 'c' says the input
// ended, 'r' W H (two uint16, host order) resizes the terminal. Each
// client gets every later output as '1' DATA (stdout, or the terminal) and
// '2' DATA (stderr). A client that cannot keep up is dropped: the
// container never waits for one. With --stdin-once the program's stdin is
// closed when the first client that brought input ends its session (one
// dropped for falling behind has not). Clients see their end of file once
// the exit is recorded.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "monitor.h"
#include "shed.h"

// run is the life of the monitor once the program runs.
struct run {
	const struct monitor_args *a;
	pid_t child;
	int sfd, lfd; // signals, the attach socket
	struct stream streams[2];
	int open_streams;
	int status, exited;
	struct timespec finished, drain_until;
	struct oom_watch oom;
};

// hand_over closes what is the child's now, and takes the terminal the
// built-in runtime sends.
static void hand_over(struct run *r, struct child_io *io) {
	// The runtime's report channel is the child's now: its end of file
	// tells the daemon that the container's process was exec'd (so the pid
	// file is written before).
	close(3);
	if (r->a->exec_fd >= 0)
		close(r->a->exec_fd);
	if (io->console[1] >= 0) {
		close(io->console[1]);
		io->out[0] = mon_receive_fd(io->console[0]);
		close(io->console[0]);
		// Input for the terminal must never block the monitor.
		if (io->out[0] >= 0)
			fcntl(io->out[0], F_SETFL, O_NONBLOCK);
		if (r->a->with_stdin)
			mon_stdin_set(io->out[0], 1, r->a->stdin_once);
	} else if (r->a->tty) {
		close(io->term_slave);
	} else {
		close(io->out[1]);
		close(io->err[1]);
	}
	if (io->in[0] >= 0)
		close(io->in[0]);
	r->streams[0] = (struct stream){.name = "stdout", .fd = io->out[0]};
	r->streams[1] = (struct stream){.name = "stderr", .fd = io->err[0]};
	r->open_streams = (r->streams[0].fd >= 0) + (r->streams[1].fd >= 0);
}

// reap handles the signals: SIGUSR1 reopens the log (kubelet's
// rotation), SIGCHLD is the program's end, or its runtime's.
static void reap(struct run *r) {
	struct signalfd_siginfo si;
	if (read(r->sfd, &si, sizeof si) != sizeof si)
		return;
	if (si.ssi_signo == SIGUSR1)
		mon_log_open(r->a->log_dir, r->a->log_path);
	if (si.ssi_signo != SIGCHLD)
		return;
	int st;
	pid_t w;
	while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
		if (w == r->child && mon_adopt(r->a->runtime_pid_file, &r->child)) {
			mon_write_process(r->a->state, STATE_PID, r->child);
			continue;
		}
		if (w == r->child) {
			r->status = st;
			r->exited = 1;
			clock_gettime(CLOCK_REALTIME, &r->finished);
			clock_gettime(CLOCK_MONOTONIC, &r->drain_until);
			r->drain_until.tv_sec += 2;
		}
	}
}

// read_stream logs what the program wrote on a stream and sends it to the
// attached clients; at its end the stream's last line goes out.
static void read_stream(struct run *r, struct stream *s) {
	char buf[MAX_LINE];
	ssize_t got = read(s->fd, buf, sizeof buf);
	if (got > 0) {
		mon_log_consume(s, buf, (size_t)got);
		mon_attach_output(s == &r->streams[0] ? ATTACH_STDOUT : ATTACH_STDERR, buf, (size_t)got);
	} else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
		mon_attach_stream_ended(s->fd);
		mon_log_flush(s);
		close(s->fd);
		s->fd = -1;
		r->open_streams--;
	}
}

// loop serves the program until it ended and its output did, or, after
// its end, for two seconds at most: processes it left may hold its output
// open.
static void loop(struct run *r) {
	while (r->open_streams > 0 || !r->exited) {
		struct pollfd pfd[7 + MAX_CLIENTS] = {{.fd = r->sfd, .events = POLLIN}};
		int n = 1;
		for (int i = 0; i < 2; i++)
			if (r->streams[i].fd >= 0)
				pfd[n++] = (struct pollfd){.fd = r->streams[i].fd, .events = POLLIN};
		int nstreams = n, plisten = -1, pnotify, pevents, pin, pclients, nclients;
		if (r->lfd >= 0 && !r->exited) {
			plisten = n;
			pfd[n++] = (struct pollfd){.fd = r->lfd, .events = POLLIN};
		}
		mon_oom_pollfds(&r->oom, pfd, &n, &pnotify, &pevents);
		mon_attach_pollfds(pfd, &n, &pin, &pclients, &nclients);
		int timeout = -1;
		if (r->exited) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			long left = (r->drain_until.tv_sec - now.tv_sec) * 1000 + (r->drain_until.tv_nsec - now.tv_nsec) / 1000000;
			if (left <= 0)
				break;
			timeout = (int)left;
		}
		if (poll(pfd, (nfds_t)n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			mon_die("poll");
		}
		if (pfd[0].revents & POLLIN)
			reap(r);
		mon_attach_clients(pfd, pclients, nclients, r->a->tty ? r->streams[0].fd : -1);
		mon_oom_handle(&r->oom, pfd, pnotify, pevents);
		mon_attach_stdin(pfd, pin);
		if (plisten >= 0 && (pfd[plisten].revents & POLLIN))
			mon_attach_accept(r->lfd);
		for (int i = 1; i < nstreams; i++) {
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))
				read_stream(r, r->streams[0].fd == pfd[i].fd ? &r->streams[0] : &r->streams[1]);
		}
	}
}

// record_exit writes how the program ended. Only then do attached clients
// see their end of file: the exit is recorded, which tells the daemon the
// container ended rather than dropped a client that fell behind.
static void record_exit(struct run *r) {
	for (int i = 0; i < 2; i++)
		mon_log_flush(&r->streams[i]);
	if (!r->exited) {
		// Both streams closed before the process ended: wait for it.
		int st;
		while (waitpid(r->child, &st, 0) < 0 && errno == EINTR)
			;
		r->status = st;
		clock_gettime(CLOCK_REALTIME, &r->finished);
	}
	int code = WIFEXITED(r->status) ? WEXITSTATUS(r->status) : 128 + WTERMSIG(r->status);
	char buf[128];
	snprintf(buf, sizeof buf, "%d %lld %d\n", code, (long long)r->finished.tv_sec * 1000000000LL + r->finished.tv_nsec,
		 mon_oom_killed(&r->oom, code));
	mon_write_file(r->a->state, STATE_EXIT, buf);
	if (r->lfd >= 0) {
		int dfd = open(r->a->state, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			unlinkat(dfd, STATE_ATTACH, 0);
			close(dfd);
		}
		close(r->lfd);
	}
}

__attribute__((constructor)) static void husk_monitor(int argc, char **argv) {
	if (argc < 2 || strcmp(argv[1], "monitor") != 0)
		return;
	// Its name in ps and top, rather than the number of the descriptor
	// husk-runtime was executed from.
	prctl(PR_SET_NAME, "husk-monitor", 0, 0, 0);
	struct monitor_args a;
	if (parse_monitor_args(argc - 1, argv + 1, &a) != 0)
		_exit(2);
	if (a.cgroup_sync >= 0)
		fcntl(a.cgroup_sync, F_SETFD, FD_CLOEXEC);
	if (!mon_log_open(a.log_dir, a.log_path))
		mon_die(a.log_path);
	// Who the monitor is, first: a daemon that dies while starting the
	// container finds it by this file.
	mon_write_process(a.state, STATE_MONITOR, getpid());

	struct run r = {.a = &a};
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	r.sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (r.sfd < 0)
		mon_die("signalfd");
	struct child_io io;
	mon_child_io(&a, &io);
	// A container that closed its stdin, or a runtime that died before
	// reading the go-ahead, must not kill the monitor that writes to it.
	// The child puts SIGPIPE back: an ignored signal stays ignored
	// across exec, and the container must get the default.
	signal(SIGPIPE, SIG_IGN);
	mon_oom_init(&r.oom, a.oom, a.oom_notify);
	// With another runtime the container's process is the runtime's
	// child: should the runtime die first (the host's OOM killer), the
	// process comes to the monitor, which then waits for it instead.
	if (a.runtime_pid_file != NULL)
		prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	r.child = mon_start_child(&a, &io, &set);
	mon_place_child(&a, &io, r.child);
	mon_oom_open(&r.oom, a.oom_parent);
	// Attach is possible from the moment StartContainer returns.
	r.lfd = mon_attach_listen(a.state);
	if (r.lfd < 0)
		dprintf(2, "husk monitor: attach socket: %s\n", strerror(errno));
	mon_write_process(a.state, STATE_PID, r.child);
	hand_over(&r, &io);
	shim_shed_readonly();
	loop(&r);
	record_exit(&r);
	_exit(0);
}
