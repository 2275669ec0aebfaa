package shim

/*
#include <stdlib.h>
#include "contract.h"
*/
import "C"

import (
	"strconv"
	"unsafe"

	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// parseMonitorArgs runs the monitor's own parser (monitor_args.c) on
// argv, for the tests that check it reads what package monitor writes (a
// test file cannot use cgo). ok is false where the monitor would exit 2.
func parseMonitorArgs(argv []string) (a monitor.Args, ok bool) {
	// In C memory: getopt permutes it, and the result points into it.
	size := C.size_t(unsafe.Sizeof((*C.char)(nil)))
	mem := C.calloc(C.size_t(len(argv)+1), size)
	defer C.free(mem)
	cargv := unsafe.Slice((**C.char)(mem), len(argv)+1)
	for i, s := range argv {
		cargv[i] = C.CString(s)
	}
	defer func() {
		for _, p := range cargv {
			C.free(unsafe.Pointer(p))
		}
	}()
	var ca C.struct_monitor_args
	if C.parse_monitor_args(C.int(len(argv)), &cargv[0], &ca) != 0 {
		return monitor.Args{}, false
	}
	str := func(p *C.char) string {
		if p == nil {
			return ""
		}
		return C.GoString(p)
	}
	a = monitor.Args{
		State: str(ca.state), LogDir: str(ca.log_dir), Log: str(ca.log_path),
		OOM: str(ca.oom), OOMParent: str(ca.oom_parent), OOMNotify: ca.oom_notify != 0,
		NetNS: str(ca.netns), IPCNS: str(ca.ipcns), UTSNS: str(ca.utsns), PIDNS: str(ca.pidns), UserNS: str(ca.userns),
		NewPID:         ca.newpid != 0,
		RuntimePIDFile: str(ca.runtime_pid_file),
		TTY:            ca.tty != 0, Stdin: ca.with_stdin != 0, StdinOnce: ca.stdin_once != 0,
	}
	if ca.exec_fd >= 0 {
		a.ExecFD = int(ca.exec_fd)
	}
	if ca.cgroup_sync >= 0 {
		a.CgroupSync = int(ca.cgroup_sync)
	}
	for i := range int(ca.ncgroups) {
		a.Cgroups = append(a.Cgroups, C.GoString(ca.cgroups[i]))
	}
	if ca.oom_score_adj != nil {
		n, err := strconv.Atoi(C.GoString(ca.oom_score_adj))
		if err != nil {
			return monitor.Args{}, false
		}
		a.OOMScoreAdj = &n
	}
	first := (uintptr(unsafe.Pointer(ca.prog)) - uintptr(mem)) / uintptr(size)
	for _, p := range cargv[first:len(argv)] {
		a.Program = append(a.Program, C.GoString(p))
	}
	return a, true
}
