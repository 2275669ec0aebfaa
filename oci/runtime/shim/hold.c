// `husk-runtime hold`: a process that only exists, until its standard
// input closes. The daemon creates a pod's user namespace, and the
// namespaces it owns, by starting one in them (only a single-threaded
// process can make a user namespace, and the daemon is not one), pins
// them, and closes its input.
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

__attribute__((constructor)) static void husk_hold(int argc, char **argv) {
	if (argc < 2 || strcmp(argv[1], "hold") != 0)
		return;
	prctl(PR_SET_NAME, "husk-hold", 0, 0, 0);
	char c;
	while (read(0, &c, 1) > 0)
		;
	_exit(0);
}
