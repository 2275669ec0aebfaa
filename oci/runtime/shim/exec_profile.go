package shim

/*
#include <stdlib.h>
#include "exec_profile.h"
*/
import "C"

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// execProfile is what exec_profile.c read of a profile.
type execProfile struct {
	UID, GID, Flags uint32
	Caps            [5]uint64
	Gids            []uint32
	Rlimits         [][3]uint64 // resource, soft, hard
	Cwd, AppArmor   string
	Env             []string
	Filter          int // instructions
}

// readExecProfile runs exec-enter's reader (exec_profile.c) on b, for the
// tests that check it reads what linux.ExecProfile writes and refuses
// what is not one (a test file cannot use cgo).
func readExecProfile(b []byte) (execProfile, bool) {
	fd, err := unix.MemfdCreate("profile", unix.MFD_CLOEXEC)
	if err != nil {
		return execProfile{}, false
	}
	f := os.NewFile(uintptr(fd), "profile")
	defer func() { _ = f.Close() }()
	if _, err := f.Write(b); err != nil {
		return execProfile{}, false
	}
	var p C.struct_exec_profile
	if C.read_exec_profile(C.int(fd), &p) != 0 {
		return execProfile{}, false
	}
	defer C.free_exec_profile(&p)
	out := execProfile{UID: uint32(p.uid), GID: uint32(p.gid), Flags: uint32(p.flags),
		Cwd: C.GoString(p.cwd), AppArmor: C.GoString(p.apparmor), Filter: int(p.seccomp.len)}
	for i := range out.Caps {
		out.Caps[i] = uint64(p.caps[i])
	}
	for _, g := range unsafe.Slice(p.gids, p.ngids) {
		out.Gids = append(out.Gids, uint32(g))
	}
	for _, r := range unsafe.Slice(p.rlimits, p.nrlimits) {
		out.Rlimits = append(out.Rlimits, [3]uint64{uint64(r.resource), uint64(r.limit.rlim_cur), uint64(r.limit.rlim_max)})
	}
	for e := p.env; *e != nil; e = (**C.char)(unsafe.Add(unsafe.Pointer(e), unsafe.Sizeof(*e))) {
		out.Env = append(out.Env, C.GoString(*e))
	}
	return out, true
}
