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
#include <grp.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "contract.h"

#define MAX_LINE 16384

struct stream {
	const char *name;
	int fd;
	char buf[MAX_LINE];
	size_t len;
};

static const char *log_path, *log_dir;
static int log_fd = -1;

static void die(const char *what) {
	dprintf(2, "husk monitor: %s: %s\n", what, strerror(errno));
	_exit(1);
}

static void open_log(void) {
	int flags = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, fd;
	if (log_dir != NULL) {
		// Non-blocking and no controlling terminal until it is known to
		// be a regular file: what a container planted there (a FIFO, a
		// device node) is refused, not written.
		flags |= O_NONBLOCK | O_NOCTTY;
		int dfd = open(log_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return;
		struct open_how how = {
			.flags = (uint64_t)(flags | O_NOFOLLOW),
			.mode = 0640,
			.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
		};
		fd = (int)syscall(SYS_openat2, dfd, log_path, &how, sizeof how);
		int saved = errno;
		close(dfd);
		struct stat st;
		if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
			close(fd);
			fd = -1;
			saved = EINVAL;
		}
		errno = saved;
	} else {
		fd = open(log_path, flags, 0640);
	}
	if (fd < 0)
		return; // keep writing to the old one rather than lose output
	if (log_fd >= 0)
		close(log_fd);
	log_fd = fd;
}

static void write_all(int fd, const char *p, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

// emit writes one CRI log line; full tells F (the line ended) from P.
static void emit(struct stream *s, const char *p, size_t n, int full) {
	struct timespec ts;
	struct tm tm;
	char head[64];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int h = snprintf(head, sizeof head, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ %s %c ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			 ts.tv_nsec, s->name, full ? 'F' : 'P');
	// One write per line, so that a line is never torn by a reopen.
	char *line = malloc((size_t)h + n + 1);
	if (line == NULL)
		return;
	memcpy(line, head, (size_t)h);
	memcpy(line + h, p, n);
	line[(size_t)h + n] = '\n';
	write_all(log_fd, line, (size_t)h + n + 1);
	free(line);
}

// consume splits what arrived into lines; an unfinished line waits in the
// buffer until it ends, or goes out as a partial (P) line once it fills it.
static void consume(struct stream *s, const char *p, size_t n) {
	while (n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t seg = nl ? (size_t)(nl - p) : n;
		size_t room = MAX_LINE - s->len;
		if (seg > room || (seg == room && nl == NULL)) {
			memcpy(s->buf + s->len, p, room);
			emit(s, s->buf, MAX_LINE, 0);
			s->len = 0;
			p += room;
			n -= room;
			continue;
		}
		memcpy(s->buf + s->len, p, seg);
		s->len += seg;
		p += seg;
		n -= seg;
		if (nl != NULL) {
			emit(s, s->buf, s->len, 1);
			s->len = 0;
			p++;
			n--;
		}
	}
}

// flush writes what is left when a stream ends. That line never ended: it
// is a partial (P), or a reader (kubelet's FallbackToLogsOnError, crictl
// logs) would add the newline the container never wrote.
static void flush(struct stream *s) {
	if (s->len > 0)
		emit(s, s->buf, s->len, 0);
	s->len = 0;
}

static void write_file(const char *dir, const char *name, const char *content) {
	char tmp[4096], path[4096];
	snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	write_all(fd, content, strlen(content));
	close(fd);
	rename(tmp, path);
}

// read_small reads a small file (of /proc or a cgroup) into buf as a
// string; 0 when it cannot.
static int read_small(const char *path, char *buf, size_t size) {
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	return 1;
}

static unsigned long long start_time(pid_t pid) {
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	if (!read_small(path, buf, sizeof buf))
		return 0;
	char *p = strrchr(buf, ')');
	if (p == NULL)
		return 0;
	// Field 22 (starttime) is the 20th after the command name.
	for (int field = 0; field < 20 && p; field++)
		p = strchr(p + 1, ' ');
	return p ? strtoull(p + 1, NULL, 10) : 0;
}

static int oom_kills(const char *file) {
	if (file == NULL)
		return 0;
	char buf[4096];
	if (!read_small(file, buf, sizeof buf))
		return 0;
	char *p = strstr(buf, "oom_kill ");
	return p ? atoi(p + strlen("oom_kill ")) : 0;
}

// oom_kills_fd reads the oom_kill count of an open memory.events file from
// its start; -1 when it cannot (the file of a removed cgroup reads ENODEV).
static int oom_kills_fd(int fd) {
	char buf[4096];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char *p = strstr(buf, "oom_kill ");
	return p ? atoi(p + strlen("oom_kill ")) : 0;
}

// oom_notifier asks the kernel (cgroup v1) to signal an eventfd whenever
// the cgroup of the memory.oom_control file, or one above it, is under
// OOM: it counts only for a program that then died of SIGKILL. With another
// runtime (runc) the kernel counts the kill in the runtime's cgroup below,
// which the runtime removes before the monitor could read it; the event
// comes to the cgroup whose limit was hit. -1 if it cannot be had.
static int oom_notifier(const char *oom_control) {
	char ctl[4096];
	const char *slash = strrchr(oom_control, '/');
	if (slash == NULL || (size_t)(slash - oom_control) + sizeof "/cgroup.event_control" > sizeof ctl)
		return -1;
	snprintf(ctl, sizeof ctl, "%.*s/cgroup.event_control", (int)(slash - oom_control), oom_control);
	int ocfd = open(oom_control, O_RDONLY | O_CLOEXEC);
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int ecfd = open(ctl, O_WRONLY | O_CLOEXEC);
	if (ocfd < 0 || efd < 0 || ecfd < 0 || dprintf(ecfd, "%d %d", efd, ocfd) < 0) {
		dprintf(2, "husk monitor: OOM notification: %s\n", strerror(errno));
		if (efd >= 0)
			close(efd);
		efd = -1;
	}
	if (ecfd >= 0)
		close(ecfd);
	// ocfd stays open: the registration lasts while it does.
	return efd;
}

// adopt: the runtime (the monitor's child) ended, but the container's
// process it started, named by its pid file, lives on as the monitor's
// child now (the monitor is a subreaper): it becomes the child waited for.
static int adopt(const char *pid_file, pid_t *child) {
	char buf[32], status[4096];
	if (pid_file == NULL || !read_small(pid_file, buf, sizeof buf))
		return 0;
	pid_t pid = (pid_t)atoi(buf);
	if (pid <= 0)
		return 0;
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	if (!read_small(path, status, sizeof status))
		return 0;
	char *pp = strstr(status, "\nPPid:");
	if (pp == NULL || atoi(pp + strlen("\nPPid:")) != getpid())
		return 0;
	*child = pid;
	return 1;
}

// oom_pending: the OOM notifier fired and was not read yet.
static int oom_pending(int efd) {
	uint64_t events;
	return efd >= 0 && read(efd, &events, sizeof events) == sizeof events && events > 0;
}

static void join(const char *file, int type) {
	if (file == NULL)
		return;
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, type) != 0)
		die(file);
	close(fd);
}

// clone_in_userns starts the container's process inside the pod's user
// namespace. The namespaces it creates (mount, PID) must belong to that
// user namespace, or the kernel refuses the container's root to mount
// proc and sysfs; they belong to the user namespace of the process that
// makes them, and the monitor must not join it (it keeps the host's
// rights, for the log and the cgroups). So a helper joins it, becomes its
// root, joins the pod's other namespaces, clones the process as the
// monitor's own child (CLONE_PARENT) and exits. It returns the child's
// pid to the monitor and 0 in the child, like clone.
static pid_t clone_in_userns(const char *userns, const char *const nss[4], const int types[4], int flags) {
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0)
		die("pipe");
	pid_t helper = fork();
	if (helper < 0)
		die("fork");
	if (helper == 0) {
		close(p[0]);
		// Opened while still the host's root: the pod's directory is
		// root's only.
		int fds[4];
		for (int i = 0; i < 4; i++) {
			fds[i] = nss[i] == NULL ? -1 : open(nss[i], O_RDONLY | O_CLOEXEC);
			if (nss[i] != NULL && fds[i] < 0)
				die(nss[i]);
		}
		join(userns, CLONE_NEWUSER);
		if (setresgid(0, 0, 0) != 0 || setgroups(0, NULL) != 0 || setresuid(0, 0, 0) != 0) {
			dprintf(3, "becoming root of the pod's user namespace: %s", strerror(errno));
			_exit(1);
		}
		for (int i = 0; i < 4; i++) {
			if (fds[i] >= 0 && setns(fds[i], types[i]) != 0)
				die(nss[i]);
			if (fds[i] >= 0)
				close(fds[i]);
		}
		pid_t c = (pid_t)syscall(SYS_clone, flags | CLONE_PARENT, NULL, NULL, NULL, NULL);
		if (c == 0) {
			close(p[1]);
			return 0;
		}
		if (c < 0)
			dprintf(3, "starting the container in its user namespace: %s", strerror(errno));
		write_all(p[1], (const char *)&c, sizeof c);
		_exit(c < 0);
	}
	close(p[1]);
	pid_t child = -1;
	ssize_t n;
	while ((n = read(p[0], &child, sizeof child)) < 0 && errno == EINTR)
		;
	close(p[0]);
	while (waitpid(helper, NULL, 0) < 0 && errno == EINTR)
		;
	if (n != sizeof child || child <= 0)
		_exit(1);
	return child;
}

#define MAX_CLIENTS 16
#define MAX_INPUT 65536

struct client {
	int fd;
	int input; // brought input ('a' 1)
};

static struct client clients[MAX_CLIENTS];
static int nclients;
static int stdin_fd = -1, stdin_is_tty, stdin_once, stdin_closing;
static char pending[MAX_INPUT]; // input the program has not taken yet
static size_t npending;

static void close_stdin(void) {
	// A terminal stays: it is the program's output too.
	if (stdin_fd >= 0 && !stdin_is_tty)
		close(stdin_fd);
	stdin_fd = -1;
	npending = 0;
	stdin_closing = 0;
}

static void write_pending(void) {
	while (npending > 0 && stdin_fd >= 0) {
		ssize_t w = write(stdin_fd, pending, npending);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				close_stdin(); // the program closed its stdin
			return;
		}
		memmove(pending, pending + w, npending - (size_t)w);
		npending -= (size_t)w;
	}
	if (npending == 0 && stdin_closing)
		close_stdin();
}

// drop_client closes client i. Its session is over when it went itself
// (ended): with --stdin-once that closes the program's stdin. A client
// dropped for falling behind has not ended its session.
static void drop_client(int i, int ended) {
	close(clients[i].fd);
	if (ended && clients[i].input && stdin_once) {
		stdin_closing = 1;
		write_pending();
	}
	clients[i] = clients[--nclients];
}

static int listen_attach(const char *dir) {
	int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	// Through the directory's descriptor: DIR may be longer than a socket
	// address can be.
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d/" STATE_ATTACH, dfd);
	unlink(addr.sun_path);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	mode_t old = umask(0077);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 8) != 0) {
		umask(old);
		if (fd >= 0)
			close(fd);
		close(dfd);
		return -1;
	}
	umask(old);
	close(dfd);
	return fd;
}

static void accept_client(int lfd) {
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	if (nclients == MAX_CLIENTS) {
		close(fd);
		return;
	}
	int size = 1 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
	clients[nclients++] = (struct client){.fd = fd};
}

// from_client handles one message of client i; 0 when the client went.
static int from_client(int i, int term) {
	static char msg[MAX_INPUT + 1];
	ssize_t n = recv(clients[i].fd, msg, sizeof msg, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 1;
	if (n <= 0)
		return 0;
	switch (msg[0]) {
	case ATTACH_HELLO:
		clients[i].input = n > 1 && msg[1] == 1;
		break;
	case ATTACH_INPUT:
		if (stdin_fd < 0 || stdin_closing)
			break;
		if ((size_t)n - 1 > sizeof pending - npending)
			return 0; // it sent more than it was let: a broken client
		memcpy(pending + npending, msg + 1, (size_t)n - 1);
		npending += (size_t)n - 1;
		write_pending();
		break;
	case ATTACH_CLOSE:
		if (clients[i].input && stdin_once) {
			clients[i].input = 0;
			stdin_closing = 1;
			write_pending();
		}
		break;
	case ATTACH_RESIZE:
		if (term >= 0 && n >= 5) {
			unsigned short wh[2];
			memcpy(wh, msg + 1, sizeof wh);
			struct winsize ws = {.ws_col = wh[0], .ws_row = wh[1]};
			ioctl(term, TIOCSWINSZ, &ws);
		}
		break;
	}
	return 1;
}

// to_clients sends output of a stream ('1' or '2') to every client.
static void to_clients(char tag, const char *p, size_t n) {
	static char msg[MAX_LINE + 1];
	if (nclients == 0)
		return;
	msg[0] = tag;
	memcpy(msg + 1, p, n);
	for (int i = 0; i < nclients;) {
		if (send(clients[i].fd, msg, n + 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno != EINTR)
			drop_client(i, 0);
		else
			i++;
	}
}

// receive_terminal waits for the runtime to send the container's terminal
// (its master) on sock; -1 if the runtime ended first, having failed.
static int receive_terminal(int sock) {
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof control.buf};
	ssize_t n;
	while ((n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
	if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof fd);
	return fd;
}

__attribute__((constructor)) static void husk_monitor(int argc, char **argv) {
	if (argc < 2 || strcmp(argv[1], "monitor") != 0)
		return;
	struct monitor_args a;
	if (parse_monitor_args(argc - 1, argv + 1, &a) != 0)
		_exit(2);
	log_path = a.log_path;
	log_dir = a.log_dir;
	stdin_once = a.stdin_once;
	const char *state = a.state, *oom = a.oom, *oom_parent = a.oom_parent, *netns = a.netns, *ipcns = a.ipcns,
		   *utsns = a.utsns, *pidns = a.pidns, *userns = a.userns, *oom_score_adj = a.oom_score_adj,
		   *runtime_pid_file = a.runtime_pid_file;
	const char *const *cgroups = a.cgroups;
	int ncgroups = a.ncgroups, newpid = a.newpid, tty = a.tty, exec_fd = a.exec_fd, with_stdin = a.with_stdin,
	    oom_notify = a.oom_notify, cgroup_sync = a.cgroup_sync;
	if (cgroup_sync >= 0)
		fcntl(cgroup_sync, F_SETFD, FD_CLOEXEC);
	int placed = ncgroups > 0 || cgroup_sync >= 0;
	char **prog = a.prog;

	open_log();
	if (log_fd < 0)
		die(log_path);
	// Who the monitor is, first: a daemon that dies while starting the
	// container finds it by this file.
	char self[64];
	snprintf(self, sizeof self, "%d %llu\n", getpid(), start_time(getpid()));
	write_file(state, STATE_MONITOR, self);

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0)
		die("signalfd");

	// The container's output: two pipes, or one terminal. The built-in
	// runtime makes the terminal in the container's own devpts and sends
	// its master on a socket; another runtime gets one of the host's.
	int out[2], err[2] = {-1, -1}, term_slave = -1, console[2] = {-1, -1};
	if (tty && exec_fd >= 0) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, console) != 0)
			die("socketpair");
		out[0] = -1;
	} else if (tty) {
		out[0] = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (out[0] < 0 || grantpt(out[0]) != 0 || unlockpt(out[0]) != 0)
			die("pty");
		term_slave = open(ptsname(out[0]), O_RDWR | O_NOCTTY);
		if (term_slave < 0)
			die("pty slave");
		fcntl(out[0], F_SETFL, O_NONBLOCK);
	} else if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
		die("pipe");
	}
	// Its input: the terminal, or a pipe; none without --stdin.
	int in[2] = {-1, -1};
	if (with_stdin && tty) {
		stdin_fd = out[0]; // -1 until the terminal is sent
		stdin_is_tty = 1;
	} else if (with_stdin) {
		if (pipe2(in, O_CLOEXEC) != 0)
			die("pipe");
		stdin_fd = in[1];
		fcntl(stdin_fd, F_SETFL, O_NONBLOCK);
	}

	int ready[2] = {-1, -1};
	if (placed && pipe2(ready, O_CLOEXEC) != 0)
		die("pipe");

	// The PID namespace is joined for the child: the monitor stays where
	// it is.
	const char *const nss[4] = {netns, ipcns, utsns, pidns};
	const int types[4] = {CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWPID};
	int flags = SIGCHLD;
	if (exec_fd >= 0) // the built-in runtime: husk-runtime container-init
		flags |= CLONE_NEWNS | (newpid ? CLONE_NEWPID : 0);
	// A container that closed its stdin, or a runtime that died before
	// reading the go-ahead, must not kill the monitor that writes to it.
	// The child puts SIGPIPE back: an ignored signal stays ignored
	// across exec, and the container must get the default.
	signal(SIGPIPE, SIG_IGN);
	int oom_efd = oom_notify && oom != NULL ? oom_notifier(oom) : -1, oom_seen = 0;
	// With another runtime the container's process is the runtime's
	// child: should the runtime die first (the host's OOM killer), the
	// process comes to the monitor, which then waits for it instead.
	if (runtime_pid_file != NULL)
		prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	pid_t child;
	if (userns != NULL) {
		child = clone_in_userns(userns, nss, types, flags);
	} else {
		for (int i = 0; i < 4; i++)
			join(nss[i], types[i]);
		child = (pid_t)syscall(SYS_clone, flags, NULL, NULL, NULL, NULL);
	}
	if (child < 0)
		die("clone");
	if (child == 0) {
		signal(SIGPIPE, SIG_DFL);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (placed && exec_fd >= 0) {
			// Without O_CLOEXEC: the runtime reads it, then closes it.
			dup2(ready[0], 5);
			setenv(ENV_CGROUP_FD, "5", 1);
		} else if (placed) {
			// Another runtime is exec'd in its cgroup, or not at all.
			char go = 0;
			ssize_t got;
			while ((got = read(ready[0], &go, 1)) < 0 && errno == EINTR)
				;
			if (got != 1 || go != PLACED_GO)
				_exit(1);
			close(ready[0]);
		}
		if (console[1] >= 0) {
			// Without O_CLOEXEC: the runtime sends the terminal on it.
			setsid();
			dup2(console[1], 6);
			setenv(ENV_CONSOLE_FD, "6", 1);
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
		} else if (tty) {
			setsid();
			ioctl(term_slave, TIOCSCTTY, 0);
			dup2(term_slave, 0);
			dup2(term_slave, 1);
			dup2(term_slave, 2);
			if (term_slave > 2)
				close(term_slave);
		} else {
			dup2(in[0] >= 0 ? in[0] : null, 0);
			dup2(out[1], 1);
			dup2(err[1], 2);
		}
		if (exec_fd >= 0) {
			fexecve(exec_fd, prog, environ);
		} else {
			// Another runtime (runc) says nothing on the report
			// channel: it closes when the runtime starts.
			fcntl(3, F_SETFD, FD_CLOEXEC);
			execvp(prog[0], prog);
		}
		dprintf(3, "starting %s: %s", prog[0], strerror(errno));
		_exit(127);
	}
	if (oom_score_adj != NULL) {
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/oom_score_adj", child);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || dprintf(fd, "%s", oom_score_adj) < 0) {
			dprintf(3, "setting oom_score_adj: %s", strerror(errno));
			kill(child, SIGKILL);
			_exit(1);
		}
		close(fd);
	}
	if (placed) {
		close(ready[0]);
		if (cgroup_sync >= 0) {
			// The daemon says why it refused on its own channel.
			char go = 0;
			ssize_t got = -1;
			if (dprintf(cgroup_sync, "%d\n", child) > 0)
				while ((got = read(cgroup_sync, &go, 1)) < 0 && errno == EINTR)
					;
			close(cgroup_sync);
			if (got != 1 || go != PLACED_GO) {
				kill(child, SIGKILL);
				_exit(1);
			}
		}
		for (int i = 0; i < ncgroups; i++) {
			int fd = open(cgroups[i], O_WRONLY | O_CLOEXEC);
			if (fd < 0 || dprintf(fd, "%d", child) < 0) {
				dprintf(3, "moving the container into its cgroup (%s): %s", cgroups[i], strerror(errno));
				kill(child, SIGKILL);
				_exit(1);
			}
			close(fd);
		}
		write_all(ready[1], "1", 1);
		close(ready[1]);
	}
	// cgroup v2 signals a change of memory.events with POLLPRI: the kills
	// are counted while the cgroup exists.
	int events_fd = -1, oom_counted = 0;
	if (oom != NULL && strlen(oom) >= strlen("/memory.events") &&
	    strcmp(oom + strlen(oom) - strlen("/memory.events"), "/memory.events") == 0) {
		events_fd = open(oom, O_RDONLY | O_CLOEXEC);
		oom_counted = events_fd >= 0 ? oom_kills_fd(events_fd) : 0;
		if (oom_counted < 0)
			oom_counted = 0;
	}
	int parent_fd = -1, parent_base = 0;
	if (events_fd >= 0 && oom_parent != NULL) {
		parent_fd = open(oom_parent, O_RDONLY | O_CLOEXEC);
		parent_base = parent_fd >= 0 ? oom_kills_fd(parent_fd) : -1;
		if (parent_base < 0 && parent_fd >= 0) {
			close(parent_fd);
			parent_fd = -1;
		}
	}
	// Attach is possible from the moment StartContainer returns.
	int lfd = listen_attach(state);
	if (lfd < 0)
		dprintf(2, "husk monitor: attach socket: %s\n", strerror(errno));
	char buf[MAX_LINE];
	snprintf(buf, sizeof buf, "%d %llu\n", child, start_time(child));
	write_file(state, STATE_PID, buf);
	// The runtime's report channel is the child's now: its end of file
	// tells the daemon that the container's process was exec'd (so the pid
	// file is written before).
	close(3);
	if (exec_fd >= 0)
		close(exec_fd);
	if (console[1] >= 0) {
		close(console[1]);
		out[0] = receive_terminal(console[0]);
		close(console[0]);
		// Input for the terminal must never block the monitor.
		if (out[0] >= 0)
			fcntl(out[0], F_SETFL, O_NONBLOCK);
		if (stdin_is_tty)
			stdin_fd = out[0];
	} else if (tty) {
		close(term_slave);
	} else {
		close(out[1]);
		close(err[1]);
	}
	if (in[0] >= 0)
		close(in[0]);

	struct stream streams[2] = {{.name = "stdout", .fd = out[0]}, {.name = "stderr", .fd = err[0]}};
	int open_streams = (streams[0].fd >= 0) + (streams[1].fd >= 0);
	int status = 0, exited = 0;
	struct timespec finished = {0}, drain_until = {0};
	while (open_streams > 0 || !exited) {
		struct pollfd pfd[7 + MAX_CLIENTS] = {{.fd = sfd, .events = POLLIN}};
		int n = 1;
		for (int i = 0; i < 2; i++)
			if (streams[i].fd >= 0)
				pfd[n++] = (struct pollfd){.fd = streams[i].fd, .events = POLLIN};
		int nstreams = n;
		// Input waits while the program has not taken what came before.
		int pin = -1, plisten = -1, pclients = -1;
		if (npending > 0 && stdin_fd >= 0) {
			pin = n;
			pfd[n++] = (struct pollfd){.fd = stdin_fd, .events = POLLOUT};
		}
		if (lfd >= 0 && !exited) {
			plisten = n;
			pfd[n++] = (struct pollfd){.fd = lfd, .events = POLLIN};
		}
		int poom = -1, pevents = -1;
		if (oom_efd >= 0) {
			poom = n;
			pfd[n++] = (struct pollfd){.fd = oom_efd, .events = POLLIN};
		}
		if (events_fd >= 0) {
			pevents = n;
			pfd[n++] = (struct pollfd){.fd = events_fd, .events = POLLPRI};
		}
		pclients = n;
		for (int i = 0; i < nclients; i++)
			pfd[n++] = (struct pollfd){.fd = clients[i].fd, .events = npending > 0 ? 0 : POLLIN};
		int timeout = -1;
		if (exited) {
			// Processes the container left may hold its output open: it is
			// read for two seconds more at most.
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			long left = (drain_until.tv_sec - now.tv_sec) * 1000 + (drain_until.tv_nsec - now.tv_nsec) / 1000000;
			if (left <= 0)
				break;
			timeout = (int)left;
		}
		int r = poll(pfd, (nfds_t)n, timeout);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == sizeof si) {
				if (si.ssi_signo == SIGUSR1)
					open_log();
				if (si.ssi_signo == SIGCHLD) {
					int st;
					pid_t w;
					while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
						if (w == child && adopt(runtime_pid_file, &child)) {
							snprintf(buf, sizeof buf, "%d %llu\n", child, start_time(child));
							write_file(state, STATE_PID, buf);
							continue;
						}
						if (w == child) {
							status = st;
							exited = 1;
							clock_gettime(CLOCK_REALTIME, &finished);
							clock_gettime(CLOCK_MONOTONIC, &drain_until);
							drain_until.tv_sec += 2;
						}
					}
				}
				break;
			}
		}
		// Clients first, by the index they had when polled (dropping one
		// moves the last into its place: go backwards).
		for (int i = nclients - 1; i >= 0; i--) {
			short re = pfd[pclients + i].revents;
			if (re & POLLIN) {
				// One message at a time while input is pending.
				if (npending == 0 && !from_client(i, tty ? streams[0].fd : -1))
					drop_client(i, 1);
			} else if (re & (POLLHUP | POLLERR | POLLNVAL)) {
				drop_client(i, 1);
			}
		}
		if (poom >= 0 && (pfd[poom].revents & POLLIN)) {
			uint64_t events;
			if (read(oom_efd, &events, sizeof events) == sizeof events && events > 0)
				oom_seen = 1;
		}
		if (pevents >= 0 && pfd[pevents].revents) {
			// kernfs says POLLPRI|POLLERR for a change, and for ever
			// once the cgroup is removed: then the read fails.
			int k = oom_kills_fd(events_fd);
			if (k > oom_counted)
				oom_counted = k;
			if (k < 0) {
				close(events_fd);
				events_fd = -1;
			}
		}
		if (pin >= 0 && pfd[pin].revents)
			write_pending();
		if (plisten >= 0 && (pfd[plisten].revents & POLLIN))
			accept_client(lfd);
		for (int i = 1; i < nstreams; i++) {
			if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
				continue;
			struct stream *s = streams[0].fd == pfd[i].fd ? &streams[0] : &streams[1];
			ssize_t got = read(s->fd, buf, sizeof buf);
			if (got > 0) {
				consume(s, buf, (size_t)got);
				to_clients(s == &streams[0] ? ATTACH_STDOUT : ATTACH_STDERR, buf, (size_t)got);
			} else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
				if (stdin_is_tty && stdin_fd == s->fd)
					close_stdin(); // the terminal is gone, and what waited for it
				flush(s);
				close(s->fd);
				s->fd = -1;
				open_streams--;
			}
		}
	}
	for (int i = 0; i < 2; i++)
		flush(&streams[i]);
	if (!exited) {
		// Both streams closed before the process ended: wait for it.
		int st;
		while (waitpid(child, &st, 0) < 0 && errno == EINTR)
			;
		status = st;
		clock_gettime(CLOCK_REALTIME, &finished);
	}
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	int own = events_fd >= 0 ? oom_kills_fd(events_fd) : -1;
	// The cgroup went before its count could be read: a kill counted by
	// the pod's cgroup during the container's life is taken as its own.
	int by_parent = own < 0 && oom_counted == 0 && parent_fd >= 0 && oom_kills_fd(parent_fd) > parent_base;
	snprintf(buf, sizeof buf, "%d %lld %d\n", code, (long long)finished.tv_sec * 1000000000LL + finished.tv_nsec,
		 // OOMKilled is the container's own process killed for memory: a
		 // child of it killed while it went on and ended otherwise (exit 0)
		 // is not; the counter is the cgroup's, so SIGKILL must be how
		 // the process died.
		 code == 128 + SIGKILL &&
			 (oom_kills(oom) > 0 || own > 0 || by_parent || oom_counted > 0 || oom_seen ||
			  oom_pending(oom_efd)));
	write_file(state, STATE_EXIT, buf);
	// Only now do attached clients see their end of file: the exit is
	// recorded, which tells the daemon the container ended rather than
	// dropped a client that fell behind.
	if (lfd >= 0) {
		int dfd = open(state, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			unlinkat(dfd, STATE_ATTACH, 0);
			close(dfd);
		}
		close(lfd);
	}
	_exit(0);
}
