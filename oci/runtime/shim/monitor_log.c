// The CRI log of the program's output (monitor.h): lines of
// "TIMESTAMP STREAM P|F TEXT" as kubelet reads them, split at MAX_LINE.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "monitor.h"

static int log_fd = -1;

MON_TEXT int mon_log_open(const char *dir, const char *path) {
	int flags = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, fd;
	if (dir != NULL) {
		// Non-blocking and no controlling terminal until it is known to
		// be a regular file: what a container planted there (a FIFO, a
		// device node) is refused, not written.
		flags |= O_NONBLOCK | O_NOCTTY;
		int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return log_fd >= 0;
		struct open_how how = {
			.flags = (uint64_t)(flags | O_NOFOLLOW),
			.mode = 0640,
			.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
		};
		fd = (int)syscall(SYS_openat2, dfd, path, &how, sizeof how);
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
		fd = open(path, flags, 0640);
	}
	if (fd < 0)
		return log_fd >= 0; // keep writing to the old one rather than lose output
	if (log_fd >= 0)
		close(log_fd);
	log_fd = fd;
	return 1;
}

// emit writes one CRI log line; full tells F (the line ended) from P.
MON_TEXT static void emit(struct stream *s, const char *p, size_t n, int full) {
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
	mon_write_all(log_fd, line, (size_t)h + n + 1);
	free(line);
}

// mon_log_consume splits what arrived into lines; an unfinished line waits
// in the buffer until it ends, or goes out as a partial (P) line once it
// fills it.
MON_TEXT void mon_log_consume(struct stream *s, const char *p, size_t n) {
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

// mon_log_flush writes what is left when a stream ends. That line never
// ended: it is a partial (P), or a reader (kubelet's FallbackToLogsOnError,
// crictl logs) would add the newline the container never wrote.
MON_TEXT void mon_log_flush(struct stream *s) {
	if (s->len > 0)
		emit(s, s->buf, s->len, 0);
	s->len = 0;
}
