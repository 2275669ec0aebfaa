// The pod init: PID 1 of a pod whose containers share a PID namespace.
//
// It runs as `husk-runtime pod-init EMPTY_DIR` with a pipe on fd 3, and this
// constructor takes over before the Go runtime starts: a Go runtime costs a
// pod init ~15 MiB of resident memory for what is a loop around waitpid.
//
// It waits for the daemon's go-ahead on fd 3 (EOF means the daemon died
// before recording it: exit). Then it gives up everything a process of the
// pod could use against the host through it (it is PID 1 of every
// container, and /proc/1 leads to its root, its binary and its memory): its
// own mount namespace with EMPTY_DIR as root, no capabilities, an
// unprivileged user, no new privileges, not dumpable. Then it reaps the
// zombies the pod's processes leave (orphans are re-parented to it) and
// exits on SIGTERM or SIGINT; SIGKILL from the daemon ends it and, with
// it, every process of the namespace.
#define _GNU_SOURCE
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "contract.h"
#include "shed.h"

#define NOBODY 65534

__attribute__((constructor)) static void husk_pod_init(int argc, char **argv) {
	if (argc < 3 || strcmp(argv[1], "pod-init") != 0)
		return;
	// Its name in ps, the pod's containers' too (it is their PID 1).
	prctl(PR_SET_NAME, "husk-pod-init", 0, 0, 0);
	// A pod with its own user namespace: the PID namespace must belong to
	// it, so it is made here, as that namespace's root. After the go-ahead
	// this process forks the init into it and stays outside as the init's
	// holder; the init says when it is set up ("f" on stdout: the daemon
	// can pin the namespace now that it has an init).
	const char *userns = getenv(ENV_POD_USERNS);
	if (userns != NULL) {
		int fd = open(userns, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWUSER) != 0)
			_exit(6);
		close(fd);
		if (setresgid(0, 0, 0) != 0 || setgroups(0, NULL) != 0 || setresuid(0, 0, 0) != 0)
			_exit(7);
		if (unshare(CLONE_NEWPID) != 0)
			_exit(8);
	}
	char go;
	if (read(3, &go, 1) != 1)
		_exit(1);
	close(3);

	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	// The holder keeps the write end of alive open: the init sees end of
	// file if the holder died before the init set its parent-death signal.
	int alive[2] = {-1, -1};
	if (userns != NULL) {
		if (pipe2(alive, O_CLOEXEC) != 0)
			_exit(9);
		pid_t init = fork();
		if (init < 0)
			_exit(9);
		if (init > 0) {
			// Killing the holder ends the init (its parent-death
			// signal), and with it the pod's PID namespace.
			close(1);
			int st;
			while (waitpid(init, &st, 0) < 0)
				;
			_exit(0);
		}
		close(alive[1]);
	}
	if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		_exit(2);
	if (chdir(argv[2]) != 0 || chroot(".") != 0 || chdir("/") != 0)
		_exit(3);
	if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
		_exit(4);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		_exit(5);
	if (userns != NULL) {
		// Set only now: a change of credentials clears it.
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		fcntl(alive[0], F_SETFL, O_NONBLOCK);
		char c;
		if (read(alive[0], &c, 1) == 0)
			_exit(0);
		close(alive[0]);
		if (write(1, "f", 1) != 1)
			_exit(10);
		close(1);
	}

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	shim_shed_readonly();
	for (;;) {
		int sig;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig != SIGCHLD)
			_exit(0);
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
	}
}
