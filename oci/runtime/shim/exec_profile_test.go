package shim

import (
	"reflect"
	"testing"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/husk-runtime/husk/oci/runtime/linux"
)

// exec-enter reads back what linux.ExecProfile writes, and refuses a
// profile cut short or grown anywhere.
func TestExecProfileReadsWhatIsWritten(t *testing.T) {
	s := &specs.Spec{
		Process: &specs.Process{
			User: specs.User{UID: 1000, GID: 2000, AdditionalGids: []uint32{3, 4, 5}},
			Cwd:  "/work", Env: []string{"PATH=/bin", "EMPTY="}, ApparmorProfile: "husk-default",
			Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}, Effective: []string{"CAP_KILL"}},
			Rlimits:      []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 500, Hard: 1000}, {Type: "RLIMIT_CORE", Soft: 0, Hard: 1 << 40}},
		},
		Linux: &specs.Linux{},
	}
	var err error
	if s.Linux.Seccomp, err = seccomp.GetDefaultProfile(s); err != nil {
		t.Fatal(err)
	}
	b, err := linux.ExecProfile(s)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := readExecProfile(b)
	if !ok {
		t.Fatal("exec_profile.c refuses linux.ExecProfile's profile")
	}
	filter := got.Filter
	got.Filter = 0
	want := execProfile{UID: 1000, GID: 2000, Caps: [5]uint64{1 << 5, 1 << 5}, Gids: []uint32{3, 4, 5},
		Rlimits: [][3]uint64{{7, 500, 1000}, {4, 0, 1 << 40}}, Cwd: "/work", AppArmor: "husk-default", Env: []string{"PATH=/bin", "EMPTY="}}
	if !reflect.DeepEqual(got, want) || filter < 100 || filter*8 >= len(b) {
		t.Errorf("read %+v (%d instructions), want %+v", got, filter, want)
	}
	for _, bad := range [][]byte{
		b[:len(b)-1], append(append([]byte{}, b...), 0), b[:79], []byte("HUSKEXP1" + string(b[8:])),
	} {
		if _, ok := readExecProfile(bad); ok {
			t.Errorf("a bad profile of %d bytes read", len(bad))
		}
	}
	// Counts that do not fit what follows.
	for _, at := range []int{60, 64, 68, 72, 76} {
		bad := append([]byte{}, b...)
		bad[at+3] = 0x7f
		if _, ok := readExecProfile(bad); ok {
			t.Errorf("a profile with a count at %d of %x read", at, bad[at:at+4])
		}
	}
}

// exec-enter reads the profile as root before it joins the container:
// nothing in it may make the reader go outside what it read.
func FuzzReadExecProfile(f *testing.F) {
	s := &specs.Spec{Process: &specs.Process{Cwd: "/", Env: []string{"A=b"}, Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1, Hard: 2}}}, Linux: &specs.Linux{}}
	b, err := linux.ExecProfile(s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, ok := readExecProfile(b); ok && 80+4*len(p.Gids)+20*len(p.Rlimits)+8*p.Filter > len(b) {
			t.Errorf("read %+v from %d bytes", p, len(b))
		}
	})
}
