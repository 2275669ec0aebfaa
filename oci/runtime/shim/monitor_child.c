// The program the monitor starts (monitor.h): its descriptors, its
// namespaces, its cgroup.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "monitor.h"

extern char **environ;

// mon_child_io makes the program's output: two pipes, or one terminal. The
// built-in runtime makes the terminal in the container's own devpts and
// sends its master on a socket; another runtime gets one of the host's.
// Its input is the terminal, or a pipe; none without --stdin.
MON_TEXT void mon_child_io(const struct monitor_args *a, struct child_io *io) {
	*io = (struct child_io){.err = {-1, -1}, .term_slave = -1, .console = {-1, -1}, .in = {-1, -1}, .ready = {-1, -1}};
	if (a->tty && a->exec_fd >= 0) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, io->console) != 0)
			mon_die("socketpair");
		io->out[0] = -1;
	} else if (a->tty) {
		io->out[0] = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (io->out[0] < 0 || grantpt(io->out[0]) != 0 || unlockpt(io->out[0]) != 0)
			mon_die("pty");
		io->term_slave = open(ptsname(io->out[0]), O_RDWR | O_NOCTTY);
		if (io->term_slave < 0)
			mon_die("pty slave");
		fcntl(io->out[0], F_SETFL, O_NONBLOCK);
	} else if (pipe2(io->out, O_CLOEXEC) != 0 || pipe2(io->err, O_CLOEXEC) != 0) {
		mon_die("pipe");
	}
	if (a->with_stdin && a->tty) {
		mon_stdin_set(io->out[0], 1, a->stdin_once); // -1 until the terminal is sent
	} else if (a->with_stdin) {
		if (pipe2(io->in, O_CLOEXEC) != 0)
			mon_die("pipe");
		fcntl(io->in[1], F_SETFL, O_NONBLOCK);
		mon_stdin_set(io->in[1], 0, a->stdin_once);
	}
	int placed = a->ncgroups > 0 || a->cgroup_sync >= 0;
	if (placed && pipe2(io->ready, O_CLOEXEC) != 0)
		mon_die("pipe");
}

MON_TEXT static void join(const char *file, int type) {
	if (file == NULL)
		return;
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, type) != 0)
		mon_die(file);
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
MON_TEXT static pid_t clone_in_userns(const char *userns, const char *const nss[4], const int types[4], int flags) {
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0)
		mon_die("pipe");
	pid_t helper = fork();
	if (helper < 0)
		mon_die("fork");
	if (helper == 0) {
		close(p[0]);
		// Opened while still the host's root: the pod's directory is
		// root's only.
		int fds[4];
		for (int i = 0; i < 4; i++) {
			fds[i] = nss[i] == NULL ? -1 : open(nss[i], O_RDONLY | O_CLOEXEC);
			if (nss[i] != NULL && fds[i] < 0)
				mon_die(nss[i]);
		}
		join(userns, CLONE_NEWUSER);
		if (setresgid(0, 0, 0) != 0 || setgroups(0, NULL) != 0 || setresuid(0, 0, 0) != 0) {
			dprintf(3, "becoming root of the pod's user namespace: %s", strerror(errno));
			_exit(1);
		}
		for (int i = 0; i < 4; i++) {
			if (fds[i] >= 0 && setns(fds[i], types[i]) != 0)
				mon_die(nss[i]);
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
		mon_write_all(p[1], (const char *)&c, sizeof c);
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

// exec_program is the child's side: its descriptors, its wait for the
// go-ahead, then the program.
static void exec_program(const struct monitor_args *a, struct child_io *io, const sigset_t *set) __attribute__((noreturn));
MON_TEXT static void exec_program(const struct monitor_args *a, struct child_io *io, const sigset_t *set) {
	int placed = a->ncgroups > 0 || a->cgroup_sync >= 0;
	signal(SIGPIPE, SIG_DFL);
	sigprocmask(SIG_UNBLOCK, set, NULL);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (placed && a->exec_fd >= 0) {
		// Without O_CLOEXEC: the runtime reads it, then closes it.
		dup2(io->ready[0], 5);
		setenv(ENV_CGROUP_FD, "5", 1);
	} else if (placed) {
		// Another runtime is exec'd in its cgroup, or not at all.
		char go = 0;
		ssize_t got;
		while ((got = read(io->ready[0], &go, 1)) < 0 && errno == EINTR)
			;
		if (got != 1 || go != PLACED_GO)
			_exit(1);
		close(io->ready[0]);
	}
	// The program leads a session of its own, inside its PID namespace:
	// CRIU dumps no process whose session leader is outside (the monitor
	// leads its own), and a terminal needs a session to control.
	setsid();
	if (io->console[1] >= 0) {
		// Without O_CLOEXEC: the runtime sends the terminal on it.
		dup2(io->console[1], 6);
		setenv(ENV_CONSOLE_FD, "6", 1);
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
	} else if (a->tty) {
		ioctl(io->term_slave, TIOCSCTTY, 0);
		dup2(io->term_slave, 0);
		dup2(io->term_slave, 1);
		dup2(io->term_slave, 2);
		if (io->term_slave > 2)
			close(io->term_slave);
	} else {
		dup2(io->in[0] >= 0 ? io->in[0] : null, 0);
		dup2(io->out[1], 1);
		dup2(io->err[1], 2);
	}
	if (a->exec_fd >= 0) {
		fexecve(a->exec_fd, a->prog, environ);
	} else {
		// Another runtime (runc) says nothing on the report channel: it
		// closes when the runtime starts.
		fcntl(3, F_SETFD, FD_CLOEXEC);
		execvp(a->prog[0], a->prog);
	}
	dprintf(3, "starting %s: %s", a->prog[0], strerror(errno));
	_exit(127);
}

MON_TEXT pid_t mon_start_child(const struct monitor_args *a, struct child_io *io, const sigset_t *set) {
	// The PID namespace is joined for the child: the monitor stays where
	// it is.
	const char *const nss[4] = {a->netns, a->ipcns, a->utsns, a->pidns};
	const int types[4] = {CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWPID};
	int flags = SIGCHLD;
	if (a->exec_fd >= 0) // the built-in runtime: husk-runtime container-init
		flags |= CLONE_NEWNS | (a->newpid ? CLONE_NEWPID : 0);
	pid_t child;
	if (a->userns != NULL) {
		child = clone_in_userns(a->userns, nss, types, flags);
	} else {
		for (int i = 0; i < 4; i++)
			join(nss[i], types[i]);
		child = (pid_t)syscall(SYS_clone, flags, NULL, NULL, NULL, NULL);
	}
	if (child < 0)
		mon_die("clone");
	if (child == 0)
		exec_program(a, io, set);
	return child;
}

// fail_start ends a program that cannot go on, and the monitor: the caller
// said why on the report channel, or the daemon knows (its refusal).
MON_TEXT static void fail_start(pid_t child) {
	kill(child, SIGKILL);
	_exit(1);
}

MON_TEXT void mon_place_child(const struct monitor_args *a, struct child_io *io, pid_t child) {
	if (a->oom_score_adj != NULL) {
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/oom_score_adj", child);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || dprintf(fd, "%s", a->oom_score_adj) < 0) {
			dprintf(3, "setting oom_score_adj: %s", strerror(errno));
			fail_start(child);
		}
		close(fd);
	}
	if (a->ncgroups == 0 && a->cgroup_sync < 0)
		return;
	close(io->ready[0]);
	if (a->cgroup_sync >= 0) {
		// The daemon says why it refused on its own channel.
		char go = 0;
		ssize_t got = -1;
		if (dprintf(a->cgroup_sync, "%d\n", child) > 0)
			while ((got = read(a->cgroup_sync, &go, 1)) < 0 && errno == EINTR)
				;
		close(a->cgroup_sync);
		if (got != 1 || go != PLACED_GO)
			fail_start(child);
	}
	for (int i = 0; i < a->ncgroups; i++) {
		int fd = open(a->cgroups[i], O_WRONLY | O_CLOEXEC);
		if (fd < 0 || dprintf(fd, "%d", child) < 0) {
			dprintf(3, "moving the container into its cgroup (%s): %s", a->cgroups[i], strerror(errno));
			fail_start(child);
		}
		close(fd);
	}
	mon_write_all(io->ready[1], "1", 1);
	close(io->ready[1]);
}

MON_TEXT int mon_adopt(const char *pid_file, pid_t *child) {
	char buf[32], status[4096];
	if (pid_file == NULL || !mon_read_small(pid_file, buf, sizeof buf))
		return 0;
	pid_t pid = (pid_t)atoi(buf);
	if (pid <= 0)
		return 0;
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	if (!mon_read_small(path, status, sizeof status))
		return 0;
	char *pp = strstr(status, "\nPPid:");
	if (pp == NULL || atoi(pp + strlen("\nPPid:")) != getpid())
		return 0;
	*child = pid;
	return 1;
}
