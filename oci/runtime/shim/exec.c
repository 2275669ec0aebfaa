// `husk-runtime exec-enter`: the way into a running container for ExecSync. Like
// the monitor it is a constructor that runs before the Go runtime starts,
// because only a single-threaded process can join a mount namespace.
//
//   husk-runtime exec-enter --pid PID --exec-fd N [--cgroup PROCS_FILE ...] [--tty]
//                   [--profile-fd P] -- husk-runtime exec-init -- COMMAND...
//
// It joins the cgroup and the namespaces of the container's first process
// PID and takes its oom_score_adj, then starts a child (joining a PID
// namespace takes effect for children only) that becomes a process of the
// container: with the
// container's exec profile at descriptor P (exec_profile.c), by itself,
// then executes COMMAND; else (a terminal, or a container made before
// profiles) it executes the rest of its arguments, husk-runtime exec-init,
// from the sealed husk-runtime at descriptor N. On SIGTERM (the daemon's timeout) it kills the child's
// process group; the child dies with it too. It exits as the child did.
//
// The mount namespace is joined last, by the child, in the constructor
// below: after the dynamic loader has loaded husk's libraries from the
// host (the container's image may have no such libraries), before the Go
// runtime starts threads.
//
// With a terminal (--tty, and HUSK_CONSOLE_FD naming a unix socket), the
// command gets a session of its own here, and exec-init, once in the
// container's mount namespace, a terminal of the container's devpts whose
// master goes back to the daemon over the socket (oci/runtime/linux).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "contract.h"
#include "exec_profile.h"

static void fail(const char *what) {
	say(2, "husk exec: %s: %s\n", what, errstr(errno));
	_exit(126);
}

int read_oom_score_adj(int pid, int *adj) {
	char path[64], buf[16];
	if (pid > 0)
		snprintf(path, sizeof path, "/proc/%d/oom_score_adj", pid);
	else
		snprintf(path, sizeof path, "/proc/self/oom_score_adj");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	*adj = atoi(buf);
	return 0;
}

int write_oom_score_adj(int adj) {
	int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int ok = say(fd, "%d", adj) > 0;
	close(fd);
	return ok ? 0 : -1;
}

// copy_oom_score_adj gives this process, and so the command, the
// oom_score_adj of the container's first process: not the daemon's (a
// kubelet gives its runtime -999, which would shield the command from
// the OOM killer).
static void copy_oom_score_adj(int pid) {
	int want, have;
	if (read_oom_score_adj(pid, &want) != 0)
		fail("reading the container's oom_score_adj");
	if (read_oom_score_adj(0, &have) == 0 && have == want)
		return;
	if (write_oom_score_adj(want) != 0)
		fail("setting oom_score_adj");
}

// join_container joins the cgroups (their procs files) and the
// namespaces of the container's first process pid, and takes its
// oom_score_adj if take_oom; all but its mount namespace, whose
// descriptor (close-on-exec) it returns for the caller to join last, when
// it no longer needs the host's /proc. A PID namespace is joined for the
// children. It exits 126 on failure.
int join_container(int pid, const char *const *cgroups, int ncgroups, int take_oom) {
	// All namespace files first: once in the container's mount namespace,
	// /proc is the container's.
	static const struct {
		const char *name;
		int type;
	} kinds[] = {{"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS}, {"net", CLONE_NEWNET},
		     {"cgroup", CLONE_NEWCGROUP}, {"pid", CLONE_NEWPID}, {"mnt", CLONE_NEWNS}};
	int fds[6];
	int joins[6];
	for (int i = 0; i < 6; i++) {
		char path[64], own[64];
		snprintf(path, sizeof path, "/proc/%d/ns/%s", pid, kinds[i].name);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			fail(path);
		// One the container shares with the host (a cgroup namespace on
		// cgroup v1) is not joined: from inside a pod's user namespace
		// it could not be.
		snprintf(own, sizeof own, "/proc/self/ns/%s", kinds[i].name);
		struct stat a, b;
		joins[i] = !(fstat(fds[i], &a) == 0 && stat(own, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev);
	}
	for (int i = 0; i < ncgroups; i++) {
		int fd = open(cgroups[i], O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, "0", 1) != 1) // "0": the writer
			fail(cgroups[i]);
		close(fd);
	}
	if (take_oom)
		copy_oom_score_adj(pid);
	// A container of a pod with its own user namespace: that one first,
	// as its root, which owns the namespaces joined next.
	char userns[64];
	snprintf(userns, sizeof userns, "/proc/%d/ns/user", pid);
	struct stat theirs, ours;
	if (stat(userns, &theirs) != 0 || stat("/proc/self/ns/user", &ours) != 0)
		fail("user namespace");
	if (theirs.st_ino != ours.st_ino || theirs.st_dev != ours.st_dev) {
		int fd = open(userns, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWUSER) != 0)
			fail("joining the user namespace");
		close(fd);
		if (setresgid(0, 0, 0) != 0 || setgroups(0, NULL) != 0 || setresuid(0, 0, 0) != 0)
			fail("becoming root of the user namespace");
	}
	for (int i = 0; i < 5; i++) {
		if (joins[i] && setns(fds[i], kinds[i].type) != 0)
			fail(kinds[i].name);
		close(fds[i]);
	}
	return fds[5];
}

__attribute__((constructor)) static void husk_exec_enter(int argc, char **argv) {
	if (argc < 2 || strcmp(argv[1], "exec-enter") != 0)
		return;
	static struct option opts[] = {
		{"pid", required_argument, 0, 'p'}, {"exec-fd", required_argument, 0, 'e'},
		{"cgroup", required_argument, 0, 'c'}, {"tty", no_argument, 0, 't'},
		{"profile-fd", required_argument, 0, 'f'}, {0, 0, 0, 0}};
	const char *cgroups[64];
	int ncgroups = 0, pid = 0, exec_fd = -1, tty = 0, profile_fd = -1;
	optind = 2;
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		switch (c) {
		case 'p': pid = atoi(optarg); break;
		case 'e': exec_fd = atoi(optarg); break;
		case 't': tty = 1; break;
		case 'f': profile_fd = atoi(optarg); break;
		case 'c':
			if (ncgroups < 64)
				cgroups[ncgroups++] = optarg;
			break;
		default: _exit(126);
		}
	}
	if (pid <= 0 || exec_fd < 0 || optind >= argc)
		_exit(126);
	// The command is what follows exec-init's own "--".
	struct exec_profile profile;
	int direct = !tty && profile_fd >= 0 && argc - optind >= 4 && strcmp(argv[optind + 1], "exec-init") == 0 &&
		     strcmp(argv[optind + 2], "--") == 0 && read_exec_profile(profile_fd, &profile) == 0;
	if (profile_fd >= 0)
		close(profile_fd);

	int mnt = join_container(pid, cgroups, ncgroups, 1);
	// The mount namespace goes to the child, open across its exec.
	if (fcntl(mnt, F_SETFD, 0) != 0)
		fail("fcntl");
	char mntfd[16];
	snprintf(mntfd, sizeof mntfd, "%d", mnt);
	setenv("HUSK_EXEC_MNT_FD", mntfd, 1);

	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);
	pid_t child = fork();
	if (child < 0)
		fail("fork");
	if (child == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		// A group of its own: a timeout ends all the command started. With
		// a terminal, a session, which the terminal the constructor
		// below makes will control.
		if (tty)
			setsid();
		else
			setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		if (direct)
			_exit(exec_with_profile(&profile, mnt, argv + optind + 3));
		fexecve(exec_fd, argv + optind, environ);
		fail("exec");
	}
	// The console socket is the child's to use, not ours to keep open.
	const char *console = getenv(ENV_CONSOLE_FD);
	if (console != NULL)
		close(atoi(console));
	for (;;) {
		int sig;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig != SIGCHLD) {
			// The daemon gives up on the command (a timeout): it ends,
			// with everything it started.
			kill(-child, SIGKILL);
			kill(child, SIGKILL);
			continue;
		}
		int st;
		pid_t w = waitpid(child, &st, WNOHANG);
		if (w == child)
			_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	}
}

// The second half: in `husk-runtime exec-init`, join the container's mount
// namespace while the process is still single-threaded.
__attribute__((constructor)) static void husk_exec_join_mount(int argc, char **argv) {
	if (argc < 2 || strcmp(argv[1], "exec-init") != 0)
		return;
	const char *v = getenv("HUSK_EXEC_MNT_FD");
	if (v == NULL)
		return;
	int fd = atoi(v);
	if (setns(fd, CLONE_NEWNS) != 0)
		fail("joining the mount namespace");
	close(fd);
	unsetenv("HUSK_EXEC_MNT_FD");
	if (chdir("/") != 0)
		fail("chdir");
}
