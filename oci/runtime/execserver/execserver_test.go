package execserver

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// A request is laid out as exec_server.c reads it: the header, then the
// cgroups' procs files and the command, each NUL-terminated.
func TestMessage(t *testing.T) {
	if n := binary.Size(request{}); n != RequestSize {
		t.Fatalf("request is %d bytes, exec_request %d", n, RequestSize)
	}
	e := Exec{PID: 42, Cgroups: []string{"/a/cgroup.procs", "/b/cgroup.procs"}, Args: []string{"sh", "-c", ""}}
	b, err := e.message(7)
	if err != nil {
		t.Fatal(err)
	}
	var h request
	if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &h); err != nil {
		t.Fatal(err)
	}
	if h != (request{Kind: KindExec, ID: 7, PID: 42, Cgroups: 2, Args: 3}) {
		t.Errorf("header %+v", h)
	}
	if got := string(b[RequestSize:]); got != "/a/cgroup.procs\x00/b/cgroup.procs\x00sh\x00-c\x00\x00" {
		t.Errorf("strings %q", got)
	}
	for name, bad := range map[string]Exec{
		"no command":         {PID: 1},
		"a NUL":              {PID: 1, Args: []string{"a\x00b"}},
		"too many arguments": {PID: 1, Args: make([]string, MaxArgs+1)},
		"too many cgroups":   {PID: 1, Args: []string{"true"}, Cgroups: make([]string, MaxCgroups+1)},
		"too long":           {PID: 1, Args: []string{strings.Repeat("x", MaxMessage)}},
	} {
		if _, err := bad.message(1); err == nil {
			t.Errorf("%s: a request", name)
		}
	}
}
