package shim

/*
#include <poll.h>
#include <stdlib.h>
#include "monitor.h"

// attach_step is one turn of the monitor's loop for attach alone: it
// waits up to timeout ms for the listening socket, the clients and the
// program's stdin, and handles what came.
static void attach_step(int lfd, int term, int timeout) {
	struct pollfd pfd[2 + MAX_CLIENTS] = {{.fd = lfd, .events = POLLIN}};
	int n = 1, pin, pclients, nclients;
	mon_attach_pollfds(pfd, &n, &pin, &pclients, &nclients);
	if (poll(pfd, (nfds_t)n, timeout) <= 0)
		return;
	mon_attach_clients(pfd, pclients, nclients, term);
	mon_attach_stdin(pfd, pin);
	if (pfd[0].revents & POLLIN)
		mon_attach_accept(lfd);
}
*/
import "C"

import "unsafe"

// The monitor's attach server (monitor_attach.c), for the tests that
// speak to it with package monitor's client (a test file cannot use cgo).

func attachListen(dir string) int {
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	return int(C.mon_attach_listen(cdir))
}

func attachStep(lfd, term, timeoutMS int) { C.attach_step(C.int(lfd), C.int(term), C.int(timeoutMS)) }

func attachSetStdin(fd int, tty, once bool) {
	b := func(v bool) C.int {
		if v {
			return 1
		}
		return 0
	}
	C.mon_stdin_set(C.int(fd), b(tty), b(once))
}

func attachOutput(tag byte, data []byte) {
	p := C.CBytes(data)
	defer C.free(p)
	C.mon_attach_output(C.char(tag), (*C.char)(p), C.size_t(len(data)))
}
