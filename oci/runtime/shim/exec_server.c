// `husk-runtime exec-server`: the daemon's long-lived maker of ExecSync's
// processes, so that an exec starts no process but its command. Started
// on the first ExecSync with a SOCK_SEQPACKET socket at descriptor 3,
// single-threaded C like the monitor; it ends when the daemon closes the
// socket, and what it started dies with it (PR_SET_PDEATHSIG).
//
// Each message on the socket is a request (struct exec_request,
// contract.h). To exec, it comes with the descriptors of the command's
// stdin, stdout and stderr, of the container's exec profile, and of a
// status pipe. The server reads the profile and starts a child straight
// into the container's PID namespace (it joins that namespace for its
// children, clones, and returns to its own), which joins the rest of the
// container (join_container, as exec-enter does), becomes its process
// from the profile (exec_with_profile) and executes the command. The
// status pipe gets "pid PID\n" (the command's, in the server's PID
// namespace), then "exit CODE\n" once the server reaped it (128+N for a
// signal), or "error MESSAGE\n" for a request it could not start
// ("unusable MESSAGE\n" for a profile it cannot read, of another
// layout: the daemon makes the process another way); then it is closed. A kill request (the daemon's timeout) kills the command's
// process group while the command is the server's child: the server
// reaps it, so its pid cannot have been reused.
//
// The child shares the server's memory (CLONE_VM) until it executes: a
// fork copied the page tables and took copy-on-write faults, 1.5-2.5 ms
// of each exec here. It is not a vfork: the server goes on at once, as
// the child may block (a frozen cgroup, a hung mount in the container)
// and must not hold up other containers' execs. So the child runs on
// memory of its own (struct block: its stack, a copy of the request) that
// the server unmaps only once the child executed or ended (the
// close-on-exec pipe `done`), allocates nothing (no malloc, no dprintf:
// the heap is the server's), returns only by _exit, and the server
// decides nothing on errno, which the two share.
//
// The kernel gives every process that shares memory the same
// oom_score_adj: a child that wrote its container's would write the
// server's and every other sharing child's too. So the server takes the
// container's oom_score_adj itself before it clones, when it has it
// already or no child shares its memory at the time, and the child
// inherits it; else (execs into containers of other values at once) the
// child is forked, with memory of its own, and takes it itself. Once no
// child shares its memory, the server takes back its own.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "contract.h"
#include "exec_profile.h"

#define CHILD_STACK (128 << 10)

// block is a child's memory until it executes.
struct block {
	char stack[CHILD_STACK];
	struct exec_request h;
	int fds[EXEC_SERVER_FDS];
	struct exec_profile profile;
	const char *cgroups[EXEC_SERVER_MAX_CGROUPS];
	char *argv[EXEC_SERVER_MAX_ARGS + 1];
	char strs[EXEC_SERVER_MAX_MESSAGE];
	int take_oom; // forked: the child takes the container's oom_score_adj
};

struct running {
	uint32_t id;
	pid_t pid;  // 0 once reaped
	int status; // the status pipe; -1 once told
	int done;   // EOF once the child executed or ended; -1 after
	int shared; // the child shares the server's memory, until done
	struct block *block;
};

static struct running running[EXEC_SERVER_MAX_RUNNING];
static int nrunning;

// The open files limit the server was started with, which it raises to
// hold two descriptors for each command running, and gives back to each
// command, which has the container's limits.
static struct rlimit nofile;

// The server's oom_score_adj when it started, and now; how many children
// share its memory (and so its oom_score_adj).
static int own_adj, cur_adj, nshared;

// set_adj gives the server (and the children that share its memory)
// adj.
static int set_adj(int adj) {
	if (write_oom_score_adj(adj) != 0)
		return -1;
	cur_adj = adj;
	return 0;
}

// parse_request splits the block's strings (contract.h) into cgroups and
// argv, pointing into them; -1 if they do not fill len exactly.
static int parse_request(struct block *b, size_t len) {
	const struct exec_request *h = &b->h;
	if (h->ncgroups > EXEC_SERVER_MAX_CGROUPS || h->nargs == 0 || h->nargs > EXEC_SERVER_MAX_ARGS)
		return -1;
	char *s = b->strs, *end = b->strs + len;
	for (uint32_t i = 0; i < h->ncgroups + h->nargs; i++) {
		char *nul = s < end ? memchr(s, 0, end - s) : NULL;
		if (nul == NULL)
			return -1;
		if (i < h->ncgroups)
			b->cgroups[i] = s;
		else
			b->argv[i - h->ncgroups] = s;
		s = nul + 1;
	}
	b->argv[h->nargs] = NULL;
	return s == end ? 0 : -1;
}

// child becomes the command: in the container's PID namespace already,
// it joins the rest of the container and executes argv.
static int child(void *arg) {
	struct block *b = arg;
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	// A group of its own, which a timeout kills; and it dies with the
	// server, which alone could report its end.
	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (setrlimit(RLIMIT_NOFILE, &nofile) != 0)
		_exit(126);
	for (int i = 0; i < 3; i++)
		if (dup2(b->fds[i], i) != i)
			_exit(126);
	int mnt = join_container(b->h.pid, b->cgroups, b->h.ncgroups, b->take_oom);
	_exit(exec_with_profile(&b->profile, mnt, b->argv));
}

// release frees what r's child ran on, once it no longer does.
static void release(struct running *r) {
	if (r->done >= 0)
		close(r->done);
	r->done = -1;
	if (r->shared && --nshared == 0 && cur_adj != own_adj)
		set_adj(own_adj);
	r->shared = 0;
	if (r->block != NULL) {
		free_exec_profile(&r->block->profile);
		munmap(r->block, sizeof *r->block);
	}
	r->block = NULL;
}

// forget drops r once its child ended and executed or died.
static void forget(struct running *r) {
	if (r->pid == 0 && r->done < 0)
		*r = running[--nrunning];
}

// start starts the command of request h with the strings strs. fds are
// closed here, but for the status pipe, kept while the command runs.
static void start(const struct exec_request *h, const char *strs, size_t len, int fds[EXEC_SERVER_FDS],
		  int ownpid) {
	int status = fds[EXEC_SERVER_FDS - 1];
	struct running r = {.id = h->id, .status = status, .done = -1};
	int done[2] = {-1, -1}, pidns = -1;
	const char *err = NULL;
	char path[64];
	int adj = 0, unusable = 0;
	r.block = mmap(NULL, sizeof *r.block, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r.block == MAP_FAILED) {
		r.block = NULL;
		err = "memory";
	} else if (nrunning == EXEC_SERVER_MAX_RUNNING) {
		errno = EAGAIN;
		err = "too many execs at once";
	} else {
		struct block *b = r.block;
		b->h = *h;
		memcpy(b->fds, fds, sizeof b->fds);
		memcpy(b->strs, strs, len);
		snprintf(path, sizeof path, "/proc/%d/ns/pid", h->pid);
		if (read_oom_score_adj(h->pid, &adj) != 0) {
			err = "reading the container's oom_score_adj";
		} else if (parse_request(b, len) != 0) {
			errno = EINVAL;
			err = "a malformed request";
		} else if (read_exec_profile(fds[3], &b->profile) != 0) {
			err = "reading the exec profile";
			unusable = 1;
		} else if (pipe2(done, O_CLOEXEC) != 0) {
			err = "pipe";
		} else if ((pidns = open(path, O_RDONLY | O_CLOEXEC)) < 0 || setns(pidns, CLONE_NEWPID) != 0) {
			err = "joining the container's PID namespace";
		} else {
			r.shared = adj == cur_adj || (nshared == 0 && set_adj(adj) == 0);
			b->take_oom = !r.shared;
			r.pid = clone(child, b->stack + CHILD_STACK, (r.shared ? CLONE_VM : 0) | SIGCHLD, b);
			if (r.pid < 0) {
				r.shared = 0;
				err = "clone";
			}
			nshared += r.shared;
			// Back to its own, for the next request; if it cannot, it
			// ends, and the daemon starts another.
			if (setns(ownpid, CLONE_NEWPID) != 0)
				_exit(1);
		}
	}
	const char *why = errstr(errno);
	if (pidns >= 0)
		close(pidns);
	if (done[1] >= 0)
		close(done[1]);
	for (int i = 0; i < EXEC_SERVER_FDS - 1; i++)
		close(fds[i]);
	if (err != NULL) {
		if (done[0] >= 0)
			close(done[0]);
		release(&r);
		if (nshared == 0 && cur_adj != own_adj)
			set_adj(own_adj);
		say(status, "%s %s: %s\n", unusable ? "unusable" : "error", err, why);
		close(status);
		return;
	}
	r.done = done[0];
	running[nrunning++] = r;
	say(status, "pid %d\n", r.pid);
}

static void kill_running(uint32_t id) {
	for (int i = 0; i < nrunning; i++)
		if (running[i].id == id && running[i].pid > 0) {
			kill(-running[i].pid, SIGKILL);
			kill(running[i].pid, SIGKILL);
		}
}

static void reap(void) {
	for (;;) {
		int st;
		pid_t w = waitpid(-1, &st, WNOHANG);
		if (w <= 0)
			return;
		for (int i = 0; i < nrunning; i++) {
			struct running *r = &running[i];
			if (r->pid != w)
				continue;
			say(r->status, "exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
			close(r->status);
			r->pid = 0;
			r->status = -1;
			// Dead, it runs on nothing.
			release(r);
			forget(r);
			break;
		}
	}
}

// receive handles one message; -1 once the daemon closed the socket.
static int receive(int sock, int ownpid) {
	static char buf[EXEC_SERVER_MAX_MESSAGE];
	union {
		char b[CMSG_SPACE(EXEC_SERVER_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {buf, sizeof buf};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
	ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n == 0)
		return -1;
	if (n < 0)
		return 0;
	int fds[EXEC_SERVER_FDS], nfds = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *got = (int *)CMSG_DATA(c);
		for (int i = 0; i < k; i++) {
			if (nfds < EXEC_SERVER_FDS)
				fds[nfds++] = got[i];
			else
				close(got[i]);
		}
	}
	struct exec_request h;
	int ok = n >= (ssize_t)sizeof h && !(msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC));
	if (ok)
		memcpy(&h, buf, sizeof h);
	if (ok && h.kind == EXEC_SERVER_EXEC && nfds == EXEC_SERVER_FDS) {
		start(&h, buf + sizeof h, n - sizeof h, fds, ownpid);
		return 0;
	}
	if (ok && h.kind == EXEC_SERVER_KILL && nfds == 0)
		kill_running(h.id);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	return 0;
}

__attribute__((constructor)) static void husk_exec_server(int argc, char **argv) {
	if (argc < 2 || strcmp(argv[1], "exec-server") != 0)
		return;
	int sock = 3;
	// Nothing in a container may look into it, nor into a child before
	// it executes, which shares its memory.
	if (fcntl(sock, F_SETFD, FD_CLOEXEC) != 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		_exit(2);
	int ownpid = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
	if (read_oom_score_adj(0, &own_adj) != 0)
		_exit(2);
	cur_adj = own_adj;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
		struct rlimit raised = {nofile.rlim_max, nofile.rlim_max};
		setrlimit(RLIMIT_NOFILE, &raised);
	}
	// A status pipe the daemon gave up on is an error to write, not the
	// server's end.
	signal(SIGPIPE, SIG_IGN);
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (ownpid < 0 || sfd < 0)
		_exit(2);
	static struct pollfd p[EXEC_SERVER_MAX_RUNNING + 2];
	for (;;) {
		p[0] = (struct pollfd){.fd = sock, .events = POLLIN};
		p[1] = (struct pollfd){.fd = sfd, .events = POLLIN};
		for (int i = 0; i < nrunning; i++)
			p[2 + i] = (struct pollfd){.fd = running[i].done, .events = POLLIN};
		int np = 2 + nrunning;
		if (poll(p, np, -1) <= 0)
			continue;
		// Children that executed (or ended): their memory is free.
		for (int i = np - 1; i >= 2; i--)
			if (p[i].revents != 0 && i - 2 < nrunning && running[i - 2].done == p[i].fd) {
				release(&running[i - 2]);
				forget(&running[i - 2]);
			}
		if (p[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == sizeof si)
				;
			reap();
		}
		if ((p[0].revents & POLLIN) && receive(sock, ownpid) != 0)
			_exit(0);
		if ((p[0].revents & (POLLHUP | POLLERR)) && !(p[0].revents & POLLIN))
			_exit(0);
	}
}
