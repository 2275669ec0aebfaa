// The monitor's files and processes (monitor.h).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "monitor.h"

MON_TEXT void mon_die(const char *what) {
	dprintf(2, "husk monitor: %s: %s\n", what, strerror(errno));
	_exit(1);
}

MON_TEXT void mon_write_all(int fd, const char *p, size_t n) {
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

MON_TEXT void mon_write_file(const char *dir, const char *name, const char *content) {
	char tmp[4096], path[4096];
	snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	mon_write_all(fd, content, strlen(content));
	close(fd);
	rename(tmp, path);
}

// mon_read_small reads a small file (of /proc or a cgroup) into buf as a
// string; 0 when it cannot.
MON_TEXT int mon_read_small(const char *path, char *buf, size_t size) {
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

MON_TEXT unsigned long long mon_start_time(pid_t pid) {
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	if (!mon_read_small(path, buf, sizeof buf))
		return 0;
	char *p = strrchr(buf, ')');
	if (p == NULL)
		return 0;
	// Field 22 (starttime) is the 20th after the command name.
	for (int field = 0; field < 20 && p; field++)
		p = strchr(p + 1, ' ');
	return p ? strtoull(p + 1, NULL, 10) : 0;
}

MON_TEXT void mon_write_process(const char *dir, const char *name, pid_t pid) {
	char buf[64];
	snprintf(buf, sizeof buf, "%d %llu\n", pid, mon_start_time(pid));
	mon_write_file(dir, name, buf);
}
