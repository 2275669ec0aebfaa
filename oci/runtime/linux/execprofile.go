package linux

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// profileHeader is the exec profile's fixed part (ExecProfile), through
// the counts: binary.Write and binary.Read lay a struct out without
// padding, as exec_profile.c's packed one.
type profileHeader struct {
	Magic                       [8]byte
	UID, GID, Flags             uint32
	Caps                        [5]uint64
	Gids, Env, Filter, StrBytes uint32
	Rlimits                     uint32
}

// profileRlimit is one of the profile's resource limits, as setrlimit
// takes it.
type profileRlimit struct {
	Resource   uint32
	Soft, Hard uint64
}

// The magic's last byte is the layout's version: exec-enter refuses a
// profile of another (one written before an upgrade) and falls back to
// exec-init, which reads the spec.
var profileMagic = [8]byte{'H', 'U', 'S', 'K', 'E', 'X', 'P', '2'}

// The header's flags.
const (
	profileNoNewPrivs = 1
	profileAmbient    = 2
)

// ExecProfile is what `husk-runtime exec-enter --profile-fd` needs to
// make a process of the container without exec-init, a Go program whose
// start alone took 6 to 9 ms of each ExecSync's 20 here: the container's
// user, capabilities, no_new_privs, resource limits, AppArmor profile,
// seccomp filter (compiled, as the kernel takes it), working directory
// and environment, from its spec. exec.c reads it (struct exec_profile,
// exec_profile.c); the two must agree on this layout, in the machine's
// byte order:
//
//	"HUSKEXP2"
//	u32 uid, gid, flags (1: no_new_privs, 2: ambient capabilities given)
//	u64 bounding, effective, permitted, inheritable, ambient capabilities
//	u32 number of additional gids, of environment entries, of seccomp
//	    instructions (0: no filter), bytes of strings, of resource limits
//	u32 additional gids
//	resource limits: u32 resource (RLIMIT_*), u64 soft, u64 hard
//	strings: cwd, AppArmor profile, the environment, each NUL-terminated
//	seccomp instructions (struct sock_filter, 8 bytes each)
//
// A capability is in a set as the spec names it; exec.c keeps of it what
// its own bounding set has, as becomeUser does.
func ExecProfile(spec *specs.Spec) ([]byte, error) {
	p := spec.Process
	if p == nil || spec.Linux == nil {
		return nil, errors.New("the spec has no process or linux section")
	}
	pc := p.Capabilities
	if pc == nil {
		pc = &specs.LinuxCapabilities{}
	}
	limits, err := rlimits(p.Rlimits)
	if err != nil {
		return nil, err
	}
	h := profileHeader{Magic: profileMagic, UID: p.User.UID, GID: p.User.GID, Gids: uint32(len(p.User.AdditionalGids)), Env: uint32(len(p.Env)), Rlimits: uint32(len(limits))}
	for i, names := range [][]string{pc.Bounding, pc.Effective, pc.Permitted, pc.Inheritable, pc.Ambient} {
		cs, err := caps(names)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			if c < 64 {
				h.Caps[i] |= 1 << uint(c)
			}
		}
	}
	filter, err := seccompProgram(spec.Linux.Seccomp)
	if err != nil {
		return nil, err
	}
	if p.NoNewPrivileges {
		h.Flags |= profileNoNewPrivs
	}
	if len(pc.Ambient) > 0 {
		h.Flags |= profileAmbient
	}
	var strs bytes.Buffer
	for _, s := range append([]string{p.Cwd, p.ApparmorProfile}, p.Env...) {
		if bytes.IndexByte([]byte(s), 0) >= 0 {
			return nil, fmt.Errorf("a NUL byte in %q", s)
		}
		strs.WriteString(s)
		strs.WriteByte(0)
	}
	h.Filter, h.StrBytes = uint32(len(filter)/8), uint32(strs.Len())
	var b bytes.Buffer
	_ = binary.Write(&b, binary.NativeEndian, h)
	_ = binary.Write(&b, binary.NativeEndian, p.User.AdditionalGids)
	_ = binary.Write(&b, binary.NativeEndian, limits)
	b.Write(strs.Bytes())
	b.Write(filter)
	return b.Bytes(), nil
}

// programs are the seccomp programs compiled, by the SHA-256 of their
// profile's JSON: libseccomp takes some 20 ms to compile the default
// profile, which nearly every container of a node has.
var programs struct {
	sync.Mutex
	m map[[32]byte][]byte
}

// maxPrograms bounds programs; a node's containers have a few profiles.
const maxPrograms = 64

// seccompProgram is the spec's filter as the kernel takes it: libseccomp's
// BPF, the same program loadSeccomp loads into a container's first
// process. Empty without a filter. The caller must not change it.
func seccompProgram(s *specs.LinuxSeccomp) ([]byte, error) {
	if s == nil {
		return nil, nil
	}
	j, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	key := sha256.Sum256(j)
	programs.Lock()
	prog, ok := programs.m[key]
	programs.Unlock()
	if ok {
		return prog, nil
	}
	if prog, err = compileSeccomp(s); err != nil {
		return nil, err
	}
	programs.Lock()
	defer programs.Unlock()
	if programs.m == nil || len(programs.m) >= maxPrograms {
		programs.m = map[[32]byte][]byte{}
	}
	programs.m[key] = prog
	return prog, nil
}

func compileSeccomp(s *specs.LinuxSeccomp) ([]byte, error) {
	f, err := seccompFilter(s)
	if err != nil {
		return nil, err
	}
	defer f.Release()
	fd, err := unix.MemfdCreate("seccomp-bpf", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	mem := os.NewFile(uintptr(fd), "seccomp-bpf")
	defer func() { _ = mem.Close() }()
	if err := f.ExportBPF(mem); err != nil {
		return nil, fmt.Errorf("seccomp: exporting the filter: %w", err)
	}
	if _, err := mem.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	prog, err := io.ReadAll(mem)
	if err != nil {
		return nil, err
	}
	if len(prog) == 0 || len(prog)%8 != 0 {
		return nil, fmt.Errorf("seccomp: an exported filter of %d bytes", len(prog))
	}
	return prog, nil
}

// ExecProfileName is the exec profile's file in a container's bundle,
// beside config.json.
const ExecProfileName = "exec.profile"

// profileProgram is the seccomp program of the exec profile at path; nil
// if there is none, or no filter in it.
func profileProgram(path string) []byte {
	b, err := os.ReadFile(path)
	var h profileHeader
	if err != nil || binary.Read(bytes.NewReader(b), binary.NativeEndian, &h) != nil || h.Magic != profileMagic {
		return nil
	}
	start := uint64(binary.Size(h)) + 4*uint64(h.Gids) + uint64(binary.Size(profileRlimit{}))*uint64(h.Rlimits) + uint64(h.StrBytes)
	if h.Filter == 0 || start+8*uint64(h.Filter) != uint64(len(b)) {
		return nil
	}
	return b[start:]
}

// loadProgram loads a compiled seccomp program with TSYNC, on every
// thread, as libseccomp's load does for a Go process.
func loadProgram(prog []byte) error {
	if len(prog) == 0 || len(prog)%8 != 0 || len(prog)/8 > 0xffff {
		return fmt.Errorf("a seccomp program of %d bytes", len(prog))
	}
	fprog := unix.SockFprog{Len: uint16(len(prog) / 8), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("loading the seccomp filter: %w", errno)
	}
	if r != 0 {
		return fmt.Errorf("loading the seccomp filter: thread %d cannot take it", r)
	}
	return nil
}
