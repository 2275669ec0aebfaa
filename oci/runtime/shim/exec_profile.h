// A container's exec profile (oci/runtime/linux.ExecProfile): what makes a
// process of the container, read by exec-enter so that its child becomes
// one without exec-init.
#ifndef HUSK_EXEC_PROFILE_H
#define HUSK_EXEC_PROFILE_H

#include <stdint.h>
#include <linux/filter.h>
#include <sys/resource.h>

#define EXEC_NO_NEW_PRIVS 1
#define EXEC_AMBIENT 2

enum { CAPS_BOUNDING, CAPS_EFFECTIVE, CAPS_PERMITTED, CAPS_INHERITABLE, CAPS_AMBIENT };

struct exec_profile {
	uint32_t uid, gid, flags;
	uint64_t caps[5];
	uint32_t ngids;
	uint32_t *gids;
	uint32_t nrlimits;
	struct exec_rlimit {
		uint32_t resource;
		struct rlimit limit;
	} *rlimits;
	const char *cwd, *apparmor;
	char **env; // NULL-terminated
	struct sock_fprog seccomp; // len 0: none
	char *buf;                 // what the above point into
	char **strs;
};

// read_exec_profile reads the profile at fd into p; -1 with errno set if
// it is not one. exec-enter never frees it: it executes or exits.
int read_exec_profile(int fd, struct exec_profile *p);
void free_exec_profile(struct exec_profile *p);

// exec_with_profile makes this process the container's, in the mount
// namespace mnt (an open descriptor), and executes argv. It returns
// only to exit: 127 when the command is not found, else 126.
int exec_with_profile(const struct exec_profile *p, int mnt, char **argv);

// say writes the formatted message to fd in one write, or fails (-1) if
// it is over 4 KiB. Not dprintf, which allocates its buffer: the exec
// server's child shares the server's heap (exec_server.c), so nothing it
// runs may allocate.
int say(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// errstr is strerror without its translation (gettext, which may
// allocate).
const char *errstr(int e);

// read_oom_score_adj reads the oom_score_adj of process pid (0: this
// one); write_oom_score_adj sets this process's. -1 on failure (exec.c).
int read_oom_score_adj(int pid, int *adj);
int write_oom_score_adj(int adj);

// join_container (exec.c) makes this process a member of the container
// whose first process is pid, but for its mount namespace: the returned
// descriptor, for exec_with_profile. With take_oom, it takes the first
// process's oom_score_adj. It exits 126 on failure.
int join_container(int pid, const char *const *cgroups, int ncgroups, int take_oom);

#endif
