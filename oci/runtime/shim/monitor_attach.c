// The attach server (monitor.h): clients of DIR/attach, the program's
// output sent to each, their input to the program's stdin. The protocol's
// bytes are contract.h's.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "monitor.h"

#define MAX_INPUT 65536

struct client {
	int fd;
	int input; // brought input (ATTACH_HELLO 1)
};

static struct client clients[MAX_CLIENTS];
static int nclients;
static int stdin_fd = -1, stdin_is_tty, stdin_once, stdin_closing;
static char pending[MAX_INPUT]; // input the program has not taken yet
static size_t npending;

MON_TEXT void mon_stdin_set(int fd, int is_tty, int once) {
	stdin_fd = fd;
	stdin_is_tty = is_tty;
	stdin_once = once;
}

MON_TEXT static void close_stdin(void) {
	// A terminal stays: it is the program's output too.
	if (stdin_fd >= 0 && !stdin_is_tty)
		close(stdin_fd);
	stdin_fd = -1;
	npending = 0;
	stdin_closing = 0;
}

MON_TEXT static void write_pending(void) {
	while (npending > 0 && stdin_fd >= 0) {
		ssize_t w = write(stdin_fd, pending, npending);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				close_stdin(); // the program closed its stdin
			return;
		}
		memmove(pending, pending + w, npending - (size_t)w);
		npending -= (size_t)w;
	}
	if (npending == 0 && stdin_closing)
		close_stdin();
}

// drop_client closes client i. Its session is over when it went itself
// (ended): with --stdin-once that closes the program's stdin. A client
// dropped for falling behind has not ended its session.
MON_TEXT static void drop_client(int i, int ended) {
	close(clients[i].fd);
	if (ended && clients[i].input && stdin_once) {
		stdin_closing = 1;
		write_pending();
	}
	clients[i] = clients[--nclients];
}

MON_TEXT int mon_attach_listen(const char *dir) {
	int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	// Through the directory's descriptor: DIR may be longer than a socket
	// address can be.
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d/" STATE_ATTACH, dfd);
	unlink(addr.sun_path);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	mode_t old = umask(0077);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 8) != 0) {
		umask(old);
		if (fd >= 0)
			close(fd);
		close(dfd);
		return -1;
	}
	umask(old);
	close(dfd);
	return fd;
}

MON_TEXT void mon_attach_accept(int lfd) {
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	if (nclients == MAX_CLIENTS) {
		close(fd);
		return;
	}
	int size = 1 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
	clients[nclients++] = (struct client){.fd = fd};
}

MON_TEXT void mon_attach_pollfds(struct pollfd *pfd, int *n, int *pin, int *pclients, int *count) {
	// Input waits while the program has not taken what came before.
	*pin = -1;
	if (npending > 0 && stdin_fd >= 0) {
		*pin = *n;
		pfd[(*n)++] = (struct pollfd){.fd = stdin_fd, .events = POLLOUT};
	}
	*pclients = *n;
	*count = nclients;
	for (int i = 0; i < nclients; i++)
		pfd[(*n)++] = (struct pollfd){.fd = clients[i].fd, .events = npending > 0 ? 0 : POLLIN};
}

// from_client handles one message of client i; 0 when the client went.
MON_TEXT static int from_client(int i, int term) {
	static char msg[MAX_INPUT + 1];
	ssize_t n = recv(clients[i].fd, msg, sizeof msg, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 1;
	if (n <= 0)
		return 0;
	switch (msg[0]) {
	case ATTACH_HELLO:
		clients[i].input = n > 1 && msg[1] == 1;
		break;
	case ATTACH_INPUT:
		if (stdin_fd < 0 || stdin_closing)
			break;
		if ((size_t)n - 1 > sizeof pending - npending)
			return 0; // it sent more than it was let: a broken client
		memcpy(pending + npending, msg + 1, (size_t)n - 1);
		npending += (size_t)n - 1;
		write_pending();
		break;
	case ATTACH_CLOSE:
		if (clients[i].input && stdin_once) {
			clients[i].input = 0;
			stdin_closing = 1;
			write_pending();
		}
		break;
	case ATTACH_RESIZE:
		if (term >= 0 && n >= 5) {
			unsigned short wh[2];
			memcpy(wh, msg + 1, sizeof wh);
			struct winsize ws = {.ws_col = wh[0], .ws_row = wh[1]};
			ioctl(term, TIOCSWINSZ, &ws);
		}
		break;
	}
	return 1;
}

MON_TEXT void mon_attach_clients(const struct pollfd *pfd, int pclients, int count, int term) {
	// By the index they had when polled (dropping one moves the last into
	// its place: go backwards).
	for (int i = count - 1; i >= 0; i--) {
		short re = pfd[pclients + i].revents;
		if (re & POLLIN) {
			// One message at a time while input is pending.
			if (npending == 0 && !from_client(i, term))
				drop_client(i, 1);
		} else if (re & (POLLHUP | POLLERR | POLLNVAL)) {
			drop_client(i, 1);
		}
	}
}

MON_TEXT void mon_attach_stdin(const struct pollfd *pfd, int pin) {
	if (pin >= 0 && pfd[pin].revents)
		write_pending();
}

// mon_attach_output sends output of a stream (ATTACH_STDOUT, ATTACH_STDERR)
// to every client; one that cannot take it now is dropped.
MON_TEXT void mon_attach_output(char tag, const char *p, size_t n) {
	static char msg[MAX_LINE + 1];
	if (nclients == 0)
		return;
	msg[0] = tag;
	memcpy(msg + 1, p, n);
	for (int i = 0; i < nclients;) {
		if (send(clients[i].fd, msg, n + 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno != EINTR)
			drop_client(i, 0);
		else
			i++;
	}
}

MON_TEXT void mon_attach_stream_ended(int fd) {
	if (stdin_is_tty && stdin_fd == fd)
		close_stdin(); // the terminal is gone, and what waited for it
}

// mon_receive_fd waits for a descriptor on sock (the built-in runtime
// sends the container's terminal); -1 if the sender ended first.
MON_TEXT int mon_receive_fd(int sock) {
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof control.buf};
	ssize_t n;
	while ((n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
	if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof fd);
	return fd;
}
