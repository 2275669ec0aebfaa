// exec-enter's child, made a process of the container from its exec
// profile (exec_profile.h) instead of by `husk-runtime exec-init`: the same
// steps in the same order as exec-init's (oci/runtime/linux: exec.go,
// becomeContainerProcess, becomeUser), without a Go runtime to start.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/magic.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "exec_profile.h"

#define PROFILE_MAGIC "HUSKEXP2"
#define PROFILE_MAX (16 << 20)
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// The fixed part, as ExecProfile writes it.
struct profile_header {
	char magic[8];
	uint32_t uid, gid, flags;
	uint64_t caps[5];
	uint32_t ngids, nenv, nfilter, strbytes, nrlimits;
} __attribute__((packed));

// One resource limit, as ExecProfile writes it.
struct profile_rlimit {
	uint32_t resource;
	uint64_t soft, hard;
} __attribute__((packed));

// read_profile_bytes fills p from the profile's bytes b, pointing into
// them; -1 if they are not a profile.
static int read_profile_bytes(char *b, size_t size, struct exec_profile *p) {
	struct profile_header h;
	memcpy(&h, b, sizeof h);
	size_t off = sizeof h;
	// Each count checked against what is left before it is multiplied.
	if (memcmp(h.magic, PROFILE_MAGIC, 8) != 0 || h.ngids > (size - off) / 4 || h.nfilter > BPF_MAXINSNS ||
	    h.nenv > size)
		return -1;
	size_t gidbytes = (size_t)h.ngids * 4, filterbytes = (size_t)h.nfilter * 8;
	if (h.nrlimits > (size - off - gidbytes) / sizeof(struct profile_rlimit))
		return -1;
	size_t fixed = gidbytes + (size_t)h.nrlimits * sizeof(struct profile_rlimit);
	if (size - off - fixed < h.strbytes || size - off - fixed - h.strbytes != filterbytes)
		return -1;
	p->uid = h.uid;
	p->gid = h.gid;
	p->flags = h.flags;
	memcpy(p->caps, h.caps, sizeof p->caps);
	p->ngids = h.ngids;
	if ((p->gids = calloc(h.ngids + 1, 4)) == NULL)
		return -1;
	memcpy(p->gids, b + off, gidbytes);
	off += gidbytes;
	p->nrlimits = h.nrlimits;
	if ((p->rlimits = calloc(h.nrlimits + 1, sizeof *p->rlimits)) == NULL)
		return -1;
	for (uint32_t i = 0; i < h.nrlimits; i++, off += sizeof(struct profile_rlimit)) {
		struct profile_rlimit r;
		memcpy(&r, b + off, sizeof r);
		p->rlimits[i].resource = r.resource;
		p->rlimits[i].limit.rlim_cur = r.soft;
		p->rlimits[i].limit.rlim_max = r.hard;
	}

	// The strings: cwd, AppArmor profile, then the environment, each
	// ending in NUL, filling strbytes exactly.
	char *s = b + off, *end = s + h.strbytes;
	size_t nstr = 2 + (size_t)h.nenv;
	if ((p->strs = calloc(nstr + 1, sizeof *p->strs)) == NULL)
		return -1;
	for (size_t i = 0; i < nstr; i++) {
		char *nul = s < end ? memchr(s, 0, end - s) : NULL;
		if (nul == NULL)
			return -1;
		p->strs[i] = s;
		s = nul + 1;
	}
	if (s != end)
		return -1;
	p->cwd = p->strs[0];
	p->apparmor = p->strs[1];
	p->env = p->strs + 2;
	off += h.strbytes;

	p->seccomp.len = h.nfilter;
	if (h.nfilter > 0) {
		if ((p->seccomp.filter = malloc(filterbytes)) == NULL)
			return -1;
		memcpy(p->seccomp.filter, b + off, filterbytes);
	}
	return 0;
}

int read_exec_profile(int fd, struct exec_profile *p) {
	memset(p, 0, sizeof *p);
	struct stat st;
	if (fstat(fd, &st) != 0)
		return -1;
	if (st.st_size < (off_t)sizeof(struct profile_header) || st.st_size > PROFILE_MAX) {
		errno = EINVAL;
		return -1;
	}
	size_t size = st.st_size;
	if ((p->buf = malloc(size)) == NULL)
		return -1;
	for (size_t got = 0; got < size;) {
		ssize_t n = pread(fd, p->buf + got, size - got, got);
		if (n <= 0) {
			free_exec_profile(p);
			errno = n == 0 ? EINVAL : errno;
			return -1;
		}
		got += n;
	}
	if (read_profile_bytes(p->buf, size, p) != 0) {
		free_exec_profile(p);
		errno = EINVAL;
		return -1;
	}
	return 0;
}

void free_exec_profile(struct exec_profile *p) {
	free(p->buf);
	free(p->gids);
	free(p->rlimits);
	free(p->strs);
	free(p->seccomp.filter);
	memset(p, 0, sizeof *p);
}

// The exit codes a shell gives.
#define EXIT_NOT_FOUND 127
#define EXIT_CANNOT 126

const char *errstr(int e) {
	const char *s = strerrordesc_np(e);
	return s != NULL ? s : "unknown error";
}

int say(int fd, const char *fmt, ...) {
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof msg) {
		errno = E2BIG;
		return -1;
	}
	return write(fd, msg, n) == n ? n : -1;
}

static int failf(int code, const char *fmt, ...) {
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	say(2, "husk exec: %s\n", msg);
	return code;
}

// executable is exec-init's checkExecutable: 0 for a file that is not a
// directory and has an execute bit.
static int executable(const char *path) {
	struct stat st;
	if (stat(path, &st) != 0)
		return -1;
	if (S_ISDIR(st.st_mode) || (st.st_mode & 0111) == 0) {
		errno = EACCES;
		return -1;
	}
	return 0;
}

// look_path finds cmd as exec-init's lookPath does: as given if it has a
// slash, else in the environment's last PATH (a default without one). It
// writes the path into full (PATH_MAX bytes) and allocates nothing: the
// exec server's child shares the server's memory.
static int look_path(const char *cmd, char **env, char *full) {
	if (strchr(cmd, '/') != NULL) {
		if (strlen(cmd) >= PATH_MAX || executable(cmd) != 0)
			return -1;
		strcpy(full, cmd);
		return 0;
	}
	const char *path = DEFAULT_PATH;
	for (char **e = env; *e != NULL; e++)
		if (strncmp(*e, "PATH=", 5) == 0)
			path = *e + 5;
	// An empty PATH names no directory (Go's filepath.SplitList).
	if (*path == '\0')
		return -1;
	for (const char *dir = path;; dir++) {
		const char *colon = strchrnul(dir, ':');
		int n = colon - dir;
		int r = n == 0 ? snprintf(full, PATH_MAX, "./%s", cmd) : snprintf(full, PATH_MAX, "%.*s/%s", n, dir, cmd);
		if (r > 0 && r < PATH_MAX && executable(full) == 0)
			return 0;
		if (*colon == '\0')
			return -1;
		dir = colon;
	}
}

// apparmor_exec is applyAppArmor: the profile the next exec puts the
// process under, written to procfs's attribute (checked to be procfs's:
// the container's /proc is the one mounted here).
static int apparmor_exec(const char *profile) {
	int fd = open("/proc/thread-self/attr/apparmor/exec", O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		fd = open("/proc/thread-self/attr/exec", O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct statfs sfs;
	if (fstatfs(fd, &sfs) != 0 || sfs.f_type != PROC_SUPER_MAGIC) {
		close(fd);
		errno = EPERM;
		return -1;
	}
	int ok = say(fd, "exec %s", profile) > 0;
	close(fd);
	return ok ? 0 : -1;
}

static int load_seccomp(const struct exec_profile *p) {
	if (p->seccomp.len == 0)
		return 0;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p->seccomp, 0, 0);
}

// become_user is becomeUser: the bounding set cut while root, the
// permitted set kept across setuid, then the sets applied; of each set
// only what this process's bounding set has.
static int become_user(const struct exec_profile *p) {
	uint64_t have = 0, caps[5];
	int last = -1;
	for (int i = 0; i < 64; i++) {
		int r = prctl(PR_CAPBSET_READ, i, 0, 0, 0);
		if (r < 0)
			break;
		last = i;
		if (r == 1)
			have |= 1ULL << i;
	}
	for (int i = 0; i < 5; i++)
		caps[i] = p->caps[i] & have;

	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	if (syscall(SYS_capget, &hdr, data) != 0)
		return failf(EXIT_CANNOT, "reading capabilities: %s", errstr(errno));
	if (data[0].effective & (1U << CAP_SETPCAP)) {
		for (int i = 0; i <= last; i++)
			if (!(caps[CAPS_BOUNDING] & (1ULL << i)) && prctl(PR_CAPBSET_DROP, i, 0, 0, 0) != 0 && errno != EINVAL)
				return failf(EXIT_CANNOT, "setting the bounding capabilities: %s", errstr(errno));
	}
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
		return failf(EXIT_CANNOT, "keepcaps: %s", errstr(errno));
	if (setgroups(p->ngids, p->gids) != 0)
		return failf(EXIT_CANNOT, "setting supplementary groups: %s", errstr(errno));
	if (setgid(p->gid) != 0)
		return failf(EXIT_CANNOT, "setting gid %u: %s", p->gid, errstr(errno));
	if (setuid(p->uid) != 0)
		return failf(EXIT_CANNOT, "setting uid %u: %s", p->uid, errstr(errno));
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0)
		return failf(EXIT_CANNOT, "keepcaps: %s", errstr(errno));
	for (int i = 0; i < 2; i++) {
		data[i].effective = caps[CAPS_EFFECTIVE] >> (32 * i);
		data[i].permitted = caps[CAPS_PERMITTED] >> (32 * i);
		data[i].inheritable = caps[CAPS_INHERITABLE] >> (32 * i);
	}
	if (syscall(SYS_capset, &hdr, data) != 0)
		return failf(EXIT_CANNOT, "setting capabilities: %s", errstr(errno));
	if (p->flags & EXEC_AMBIENT) {
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
			return failf(EXIT_CANNOT, "setting ambient capabilities: %s", errstr(errno));
		for (int i = 0; i <= last; i++)
			if ((caps[CAPS_AMBIENT] & (1ULL << i)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, i, 0, 0) != 0 &&
			    errno != EINVAL)
				return failf(EXIT_CANNOT, "setting ambient capabilities: %s", errstr(errno));
	}
	return 0;
}

int exec_with_profile(const struct exec_profile *p, int mnt, char **argv) {
	// Until the exec, nothing in the container may look into this process.
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		return failf(EXIT_CANNOT, "prctl: %s", errstr(errno));
	if (setns(mnt, CLONE_NEWNS) != 0)
		return failf(EXIT_CANNOT, "joining the mount namespace: %s", errstr(errno));
	close(mnt);
	if (chdir("/") != 0 || chdir(p->cwd) != 0)
		return failf(EXIT_CANNOT, "changing to the working directory %s: %s", p->cwd, errstr(errno));
	if (argv[0] == NULL || argv[0][0] == '\0')
		return failf(EXIT_NOT_FOUND, "the spec has no command");
	char path[PATH_MAX];
	if (look_path(argv[0], p->env, path) != 0)
		return failf(EXIT_NOT_FOUND, "executable \"%s\" not found in $PATH or not executable", argv[0]);
	// While root: raising a hard limit takes CAP_SYS_RESOURCE.
	for (uint32_t i = 0; i < p->nrlimits; i++)
		if (setrlimit(p->rlimits[i].resource, &p->rlimits[i].limit) != 0)
			return failf(EXIT_CANNOT, "setting resource limit %u: %s", p->rlimits[i].resource, errstr(errno));
	if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
		return failf(EXIT_CANNOT, "close_range: %s", errstr(errno));
	// Before no_new_privs and the seccomp filter, which may forbid it.
	if (p->apparmor[0] != '\0' && apparmor_exec(p->apparmor) != 0)
		return failf(EXIT_CANNOT, "applying AppArmor profile %s: %s", p->apparmor, errstr(errno));
	int nnp = p->flags & EXEC_NO_NEW_PRIVS;
	if (!nnp && load_seccomp(p) != 0)
		return failf(EXIT_CANNOT, "loading the seccomp filter: %s", errstr(errno));
	int code = become_user(p);
	if (code != 0)
		return code;
	if (nnp) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
			return failf(EXIT_CANNOT, "setting no_new_privs: %s", errstr(errno));
		if (load_seccomp(p) != 0)
			return failf(EXIT_CANNOT, "loading the seccomp filter: %s", errstr(errno));
	}
	execve(path, argv, p->env);
	return failf(EXIT_CANNOT, "executing %s: %s", argv[0], errstr(errno));
}
