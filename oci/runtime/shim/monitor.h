// What the parts of the container monitor (monitor*.c) share. Each file
// is one job: monitor_io.c files and processes, monitor_log.c the CRI log,
// monitor_attach.c the attach server and the program's input,
// monitor_oom.c the OOM watch, monitor_child.c starting and placing the
// program; monitor.c runs them. Their names start with mon_, beside the
// other C programs of husk-runtime.
#ifndef HUSK_MONITOR_H
#define HUSK_MONITOR_H

#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#include "contract.h"

// MON_TEXT marks every function of the monitor's parts. Each container
// has a monitor, which runs in a constructor before the Go runtime: GCC
// puts the constructor (and what only it calls) in .text.startup, at the
// start of husk-runtime's text, but the functions of other files in .text,
// behind all the Go code. Kept beside the constructor, a monitor maps 14
// fewer pages of the binary (56 KiB of RSS a container).
#define MON_TEXT __attribute__((section(".text.startup.monitor")))

#define MAX_LINE 16384 // the longest CRI log line; longer ones are split (P)

// monitor_io.c
void mon_die(const char *what) __attribute__((noreturn));
void mon_write_all(int fd, const char *p, size_t n);
// mon_write_file replaces dir/name whole with content.
void mon_write_file(const char *dir, const char *name, const char *content);
int mon_read_small(const char *path, char *buf, size_t size);
unsigned long long mon_start_time(pid_t pid);
// mon_write_process writes "PID STARTTIME" to dir/name.
void mon_write_process(const char *dir, const char *name, pid_t pid);

// monitor_log.c: one of the program's output streams, as CRI log lines.
struct stream {
	const char *name; // "stdout", "stderr"
	int fd;
	char buf[MAX_LINE]; // the line that has not ended yet
	size_t len;
};
// mon_log_open (re)opens the log (path below dir, if dir is given); the
// old one stays if it cannot. 0 if no log is open.
int mon_log_open(const char *dir, const char *path);
void mon_log_consume(struct stream *s, const char *p, size_t n);
void mon_log_flush(struct stream *s);

// monitor_attach.c: clients of the attach socket, and the program's stdin
// they write to.
#define MAX_CLIENTS 16
void mon_stdin_set(int fd, int is_tty, int once);
int mon_attach_listen(const char *dir);
void mon_attach_accept(int lfd);
// mon_attach_pollfds adds the descriptors attach waits on to pfd from *n:
// the program's stdin while input waits for it (its index in *pin, else
// -1), then each client (from *pclients on, *nclients of them).
void mon_attach_pollfds(struct pollfd *pfd, int *n, int *pin, int *pclients, int *nclients);
// mon_attach_clients handles what the clients polled sent (term: the
// terminal to resize, or -1); mon_attach_stdin what the stdin polled took.
void mon_attach_clients(const struct pollfd *pfd, int pclients, int nclients, int term);
void mon_attach_stdin(const struct pollfd *pfd, int pin);
void mon_attach_output(char tag, const char *p, size_t n);
// mon_attach_stream_ended: a stream of the program ended; if it was the
// terminal, so is its input.
void mon_attach_stream_ended(int fd);
int mon_receive_fd(int sock);

// monitor_oom.c: whether the program was killed for memory.
struct oom_watch {
	const char *file; // memory.events (v2) or memory.oom_control (v1)
	int notify_fd;    // v1: the eventfd of cgroup.event_control, or -1
	int seen;         // v1: the notifier fired
	int events_fd;    // v2: memory.events, open while the cgroup is
	int counted;      // v2: the most oom_kill it read
	int parent_fd;    // v2: the pod's memory.events, and its count at start
	int parent_base;
};
void mon_oom_init(struct oom_watch *w, const char *file, int notify);
// mon_oom_open opens memory.events once the program is in its cgroup.
void mon_oom_open(struct oom_watch *w, const char *parent);
void mon_oom_pollfds(struct oom_watch *w, struct pollfd *pfd, int *n, int *pnotify, int *pevents);
void mon_oom_handle(struct oom_watch *w, const struct pollfd *pfd, int pnotify, int pevents);
// mon_oom_killed: the program, which ended with code, was killed for
// memory.
int mon_oom_killed(struct oom_watch *w, int code);

// monitor_child.c: the program, its descriptors and its placement.
struct child_io {
	int out[2], err[2]; // stdout and stderr pipes; out[0] is the terminal with one
	int term_slave;     // a terminal of the host's (another runtime)
	int console[2];     // the socket the built-in runtime sends its terminal on
	int in[2];          // the stdin pipe
	int ready[2];       // the go-ahead once the program is in its cgroup
};
void mon_child_io(const struct monitor_args *a, struct child_io *io);
// mon_start_child starts the program in the pod's namespaces; the child
// never returns. set is what the monitor blocked, for the child to unblock.
pid_t mon_start_child(const struct monitor_args *a, struct child_io *io, const sigset_t *set);
// mon_place_child sets the program's oom_score_adj and puts it in its
// cgroup (or has the daemon do it), then lets it go on.
void mon_place_child(const struct monitor_args *a, struct child_io *io, pid_t child);
// mon_adopt: the runtime (the monitor's child) ended, but the container's
// process it started, named by its pid file, is the monitor's child now.
int mon_adopt(const char *pid_file, pid_t *child);

#endif
