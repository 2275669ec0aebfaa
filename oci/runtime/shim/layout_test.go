package shim

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestMonitorCodeIsTogether: the functions of the monitor's parts
// (monitor.h's MON_TEXT) sit beside its constructor in husk-runtime. A
// function left out lands behind the Go code, a megabyte away, and every container's monitor then maps more pages of
// the binary (stop 21's split of monitor.c cost 56 KiB of RSS each so).
func TestMonitorCodeIsTogether(t *testing.T) {
	// Built here: go test strips its own binary's symbols.
	exe := filepath.Join(t.TempDir(), "husk-runtime")
	build := exec.Command("go", "build", "-trimpath", "-o", exe, "../../../cmd/husk-runtime")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, out)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	// Linked static (shim.go): a monitor maps no shared library, which
	// would cost each one another megabyte of pages it cannot give back
	// (shed.c).
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("husk-runtime is linked dynamically (PT_INTERP)")
		}
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	defs := monitorFunctions(t)
	var ctor elf.Symbol
	var parts []elf.Symbol
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC {
			continue
		}
		if s.Name == "husk_monitor" {
			ctor = s
		} else if defs[s.Name] {
			parts = append(parts, s)
		}
	}
	// Static functions may be inlined, and then have no symbol.
	if ctor.Value == 0 || len(parts) < 20 {
		t.Fatalf("found the constructor at %#x and %d of the monitor's %d functions in %s", ctor.Value, len(parts), len(defs), exe)
	}
	// The monitor's code is some 12 KiB; 64 KiB is the kernel's fault-around
	// window, the pages one fault maps.
	const near = 64 << 10
	for _, s := range parts {
		d := int64(s.Value) - int64(ctor.Value)
		if d < -near || d > near {
			t.Errorf("%s is %d KiB from husk_monitor: mark it MON_TEXT", s.Name, d>>10)
		}
	}
}

// monitorFunctions names the functions monitor*.c define: a definition
// starts a line, and its body opens on it or on a line of its own.
func monitorFunctions(t *testing.T) map[string]bool {
	files, err := filepath.Glob("monitor*.c")
	if err != nil || len(files) == 0 {
		t.Fatalf("the monitor's sources: %v", err)
	}
	def := regexp.MustCompile(`(?m)^(?:MON_TEXT )?(?:static )?[a-z_0-9][a-z_0-9 ]*[ *]([a-z_0-9]+)\(`)
	names := map[string]bool{}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range def.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
		}
	}
	return names
}
