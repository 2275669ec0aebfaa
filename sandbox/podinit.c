// The pod init: PID 1 of a pod whose containers share a PID namespace.
//
// It runs as `husk pod-init`, and this constructor takes over before the Go
// runtime starts: a Go runtime costs a pod init ~15 MiB of resident memory
// for what is a loop around waitpid. It reaps the zombies the pod's
// processes leave (orphans are re-parented to it) and exits on SIGTERM or
// SIGINT; SIGKILL from the daemon ends it and, with it, every process of
// the namespace.
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((constructor)) static void husk_pod_init(int argc, char **argv) {
	if (argc < 2 || strcmp(argv[1], "pod-init") != 0)
		return;
	// Not dumpable: no process of the pod may open /proc/1/exe, which is
	// the husk binary (CVE-2019-5736), or read this process's memory.
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
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
