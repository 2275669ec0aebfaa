// The OOM watch (monitor.h): whether the program was killed for memory.
// cgroup v2 counts kills in memory.events, which the monitor reads as they
// happen (systemd removes a scope's cgroup once its processes are gone);
// v1 counts them in memory.oom_control, and for another runtime signals
// them on an eventfd instead (--oom-notify).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "monitor.h"

MON_TEXT static int oom_kills(const char *file) {
	if (file == NULL)
		return 0;
	char buf[4096];
	if (!mon_read_small(file, buf, sizeof buf))
		return 0;
	char *p = strstr(buf, "oom_kill ");
	return p ? atoi(p + strlen("oom_kill ")) : 0;
}

// oom_kills_fd reads the oom_kill count of an open memory.events file from
// its start; -1 when it cannot (the file of a removed cgroup reads ENODEV).
MON_TEXT static int oom_kills_fd(int fd) {
	char buf[4096];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char *p = strstr(buf, "oom_kill ");
	return p ? atoi(p + strlen("oom_kill ")) : 0;
}

// oom_notifier asks the kernel (cgroup v1) to signal an eventfd whenever
// the cgroup of the memory.oom_control file, or one above it, is under
// OOM: it counts only for a program that then died of SIGKILL. With another
// runtime (runc) the kernel counts the kill in the runtime's cgroup below,
// which the runtime removes before the monitor could read it; the event
// comes to the cgroup whose limit was hit. -1 if it cannot be had.
MON_TEXT static int oom_notifier(const char *oom_control) {
	char ctl[4096];
	const char *slash = strrchr(oom_control, '/');
	if (slash == NULL || (size_t)(slash - oom_control) + sizeof "/cgroup.event_control" > sizeof ctl)
		return -1;
	snprintf(ctl, sizeof ctl, "%.*s/cgroup.event_control", (int)(slash - oom_control), oom_control);
	int ocfd = open(oom_control, O_RDONLY | O_CLOEXEC);
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int ecfd = open(ctl, O_WRONLY | O_CLOEXEC);
	if (ocfd < 0 || efd < 0 || ecfd < 0 || dprintf(ecfd, "%d %d", efd, ocfd) < 0) {
		dprintf(2, "husk monitor: OOM notification: %s\n", strerror(errno));
		if (efd >= 0)
			close(efd);
		efd = -1;
	}
	if (ecfd >= 0)
		close(ecfd);
	// ocfd stays open: the registration lasts while it does.
	return efd;
}

MON_TEXT void mon_oom_init(struct oom_watch *w, const char *file, int notify) {
	*w = (struct oom_watch){.file = file, .notify_fd = -1, .events_fd = -1, .parent_fd = -1};
	if (notify && file != NULL)
		w->notify_fd = oom_notifier(file);
}

MON_TEXT void mon_oom_open(struct oom_watch *w, const char *parent) {
	// cgroup v2 signals a change of memory.events with POLLPRI: the kills
	// are counted while the cgroup exists.
	const char *oom = w->file;
	if (oom != NULL && strlen(oom) >= strlen("/memory.events") &&
	    strcmp(oom + strlen(oom) - strlen("/memory.events"), "/memory.events") == 0) {
		w->events_fd = open(oom, O_RDONLY | O_CLOEXEC);
		w->counted = w->events_fd >= 0 ? oom_kills_fd(w->events_fd) : 0;
		if (w->counted < 0)
			w->counted = 0;
	}
	if (w->events_fd >= 0 && parent != NULL) {
		w->parent_fd = open(parent, O_RDONLY | O_CLOEXEC);
		w->parent_base = w->parent_fd >= 0 ? oom_kills_fd(w->parent_fd) : -1;
		if (w->parent_base < 0 && w->parent_fd >= 0) {
			close(w->parent_fd);
			w->parent_fd = -1;
		}
	}
}

MON_TEXT void mon_oom_pollfds(struct oom_watch *w, struct pollfd *pfd, int *n, int *pnotify, int *pevents) {
	*pnotify = *pevents = -1;
	if (w->notify_fd >= 0) {
		*pnotify = *n;
		pfd[(*n)++] = (struct pollfd){.fd = w->notify_fd, .events = POLLIN};
	}
	if (w->events_fd >= 0) {
		*pevents = *n;
		pfd[(*n)++] = (struct pollfd){.fd = w->events_fd, .events = POLLPRI};
	}
}

MON_TEXT void mon_oom_handle(struct oom_watch *w, const struct pollfd *pfd, int pnotify, int pevents) {
	if (pnotify >= 0 && (pfd[pnotify].revents & POLLIN)) {
		uint64_t events;
		if (read(w->notify_fd, &events, sizeof events) == sizeof events && events > 0)
			w->seen = 1;
	}
	if (pevents >= 0 && pfd[pevents].revents) {
		// kernfs says POLLPRI|POLLERR for a change, and for ever once the
		// cgroup is removed: then the read fails.
		int k = oom_kills_fd(w->events_fd);
		if (k > w->counted)
			w->counted = k;
		if (k < 0) {
			close(w->events_fd);
			w->events_fd = -1;
		}
	}
}

// oom_pending: the OOM notifier fired and was not read yet.
MON_TEXT static int oom_pending(int efd) {
	uint64_t events;
	return efd >= 0 && read(efd, &events, sizeof events) == sizeof events && events > 0;
}

MON_TEXT int mon_oom_killed(struct oom_watch *w, int code) {
	// OOMKilled is the container's own process killed for memory: a child
	// of it killed while it went on and ended otherwise (exit 0) is not;
	// the counter is the cgroup's, so SIGKILL must be how the process died.
	if (code != 128 + SIGKILL)
		return 0;
	int own = w->events_fd >= 0 ? oom_kills_fd(w->events_fd) : -1;
	// The cgroup went before its count could be read: a kill counted by the
	// pod's cgroup during the container's life is taken as its own.
	int by_parent = own < 0 && w->counted == 0 && w->parent_fd >= 0 && oom_kills_fd(w->parent_fd) > w->parent_base;
	return oom_kills(w->file) > 0 || own > 0 || by_parent || w->counted > 0 || w->seen || oom_pending(w->notify_fd);
}
