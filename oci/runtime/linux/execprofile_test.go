package linux

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func execSpec() *specs.Spec {
	return &specs.Spec{
		Process: &specs.Process{
			User: specs.User{UID: 1000, GID: 2000, AdditionalGids: []uint32{3, 4}},
			Cwd:  "/work", Env: []string{"PATH=/bin", "A=b"},
			NoNewPrivileges: true, ApparmorProfile: "husk-default",
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 500, Hard: 1000}},
			Capabilities: &specs.LinuxCapabilities{
				Bounding: []string{"CAP_CHOWN", "CAP_KILL"}, Effective: []string{"CAP_KILL"},
				Permitted: []string{"CAP_KILL"}, Ambient: []string{"CAP_KILL"},
			},
		},
		Linux: &specs.Linux{},
	}
}

// seccompSpec is execSpec with the default seccomp profile.
func seccompSpec(t testing.TB) *specs.Spec {
	s := execSpec()
	sc, err := seccomp.GetDefaultProfile(s)
	if err != nil {
		t.Fatal(err)
	}
	s.Linux.Seccomp = sc
	return s
}

// The layout exec_profile.c reads.
func TestExecProfileLayout(t *testing.T) {
	b, err := ExecProfile(seccompSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("HUSKEXP2")) {
		t.Fatalf("magic: %q", b[:8])
	}
	var h profileHeader
	r := bytes.NewReader(b)
	if err := binary.Read(r, binary.NativeEndian, &h); err != nil {
		t.Fatal(err)
	}
	const kill, chown = 1 << 5, 1 << 0
	if h.UID != 1000 || h.GID != 2000 || h.Flags != 3 || h.Caps != [5]uint64{chown | kill, kill, kill, 0, kill} || h.Gids != 2 || h.Env != 2 || h.Rlimits != 1 {
		t.Errorf("header %+v", h)
	}
	gids := make([]uint32, h.Gids)
	_ = binary.Read(r, binary.NativeEndian, gids)
	rlimits := make([]profileRlimit, h.Rlimits)
	_ = binary.Read(r, binary.NativeEndian, rlimits)
	if len(rlimits) != 1 || rlimits[0] != (profileRlimit{Resource: 7, Soft: 500, Hard: 1000}) {
		t.Errorf("rlimits %+v, want RLIMIT_NOFILE (7) 500/1000", rlimits)
	}
	strs := make([]byte, h.StrBytes)
	_, _ = r.Read(strs)
	if got := strings.Split(string(strs), "\x00"); len(got) != 5 || got[0] != "/work" || got[1] != "husk-default" || got[2] != "PATH=/bin" || got[3] != "A=b" || got[4] != "" {
		t.Errorf("gids %v, strings %q", gids, got)
	}
	// The rest is the filter: libseccomp's program for the default
	// profile, hundreds of instructions.
	if rest := r.Len(); rest != int(h.Filter)*8 || h.Filter < 100 {
		t.Errorf("%d instructions, %d bytes left", h.Filter, rest)
	}
	// container-init takes that program from the file.
	path := filepath.Join(t.TempDir(), ExecProfileName)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := profileProgram(path); !bytes.Equal(got, b[len(b)-int(h.Filter)*8:]) {
		t.Errorf("profileProgram: %d bytes, want the last %d", len(got), h.Filter*8)
	}
	if err := os.WriteFile(path, b[:len(b)-1], 0o600); err != nil {
		t.Fatal(err)
	}
	if got := profileProgram(path); got != nil {
		t.Errorf("profileProgram of a profile cut short: %d bytes", len(got))
	}
}

func TestExecProfileRefuses(t *testing.T) {
	s := execSpec()
	s.Process.Capabilities.Effective = []string{"CAP_NONSENSE"}
	if _, err := ExecProfile(s); err == nil {
		t.Error("a profile with an unknown capability")
	}
	s = execSpec()
	s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_NONSENSE"})
	if _, err := ExecProfile(s); err == nil {
		t.Error("a profile with an unknown rlimit")
	}
	s = execSpec()
	s.Process.Env = append(s.Process.Env, "X=a\x00b")
	if _, err := ExecProfile(s); err == nil {
		t.Error("a profile with a NUL in the environment")
	}
	// Without a filter, no instructions.
	b, err := ExecProfile(execSpec())
	if err != nil || binary.NativeEndian.Uint32(b[8+12+40+8:]) != 0 {
		t.Errorf("no seccomp: %v", err)
	}
}

// What CreateContainer spends on a container's profile once the default
// seccomp profile is compiled (programs): ~0.1 ms, against ~20 ms for
// libseccomp to compile it.
func BenchmarkExecProfile(b *testing.B) {
	s := seccompSpec(b)
	for b.Loop() {
		if _, err := ExecProfile(s); err != nil {
			b.Fatal(err)
		}
	}
}
