package cgroups

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
)

// testPrefix starts the name of every top-level cgroup the tests make, so
// that TestMain can count them in every hierarchy before and after.
const testPrefix = "husktest"

func TestMain(m *testing.M) {
	before, err := countTestCgroups()
	if err != nil {
		fmt.Fprintln(os.Stderr, "count cgroups:", err)
		os.Exit(1)
	}
	code := m.Run()
	after, err := countTestCgroups()
	if err != nil {
		fmt.Fprintln(os.Stderr, "count cgroups:", err)
		os.Exit(1)
	}
	if after != before {
		fmt.Fprintf(os.Stderr, "FAIL: %d test cgroups (%s*) before the tests, %d after: leaked\n", before, testPrefix, after)
		code = 1
	} else if testing.Verbose() {
		fmt.Printf("test cgroups before and after: %d\n", after)
	}
	os.Exit(code)
}

// countTestCgroups counts the cgroups, at any depth, under the top-level
// test cgroups of every mounted cgroup hierarchy (v1 and v2).
func countTestCgroups() (int, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || (fields[2] != "cgroup" && fields[2] != "cgroup2") {
			continue
		}
		tops, err := filepath.Glob(filepath.Join(fields[1], testPrefix+"*"))
		if err != nil {
			return 0, err
		}
		for _, top := range tops {
			err := filepath.WalkDir(top, func(_ string, d os.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if d.IsDir() {
					n++
				}
				return nil
			})
			if err != nil {
				return 0, err
			}
		}
	}
	return n, sc.Err()
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make cgroups")
	}
}

// uniqueName returns a fresh top-level cgroup name (no dash, so that it is
// also a one-level systemd slice prefix).
func uniqueName(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return testPrefix + hex.EncodeToString(b)
}

// v1Manager returns the Manager of this host if it runs cgroup v1.
func v1Manager(t *testing.T, driver Driver) *Manager {
	t.Helper()
	requireRoot(t)
	m, err := New(driver)
	if err != nil {
		t.Fatal(err)
	}
	if m.Unified() {
		t.Skip("the host runs cgroup v2 only: the v1 code cannot run here (the v2 tests cover this host)")
	}
	return m
}

// v2Manager returns a Manager running the v2 code: on a unified host the
// default one, on a hybrid host one rooted at its cgroup2 hierarchy
// (/sys/fs/cgroup/unified), which can make cgroups and hold processes but
// usually offers few or no controllers.
func v2Manager(t *testing.T, driver Driver) *Manager {
	t.Helper()
	requireRoot(t)
	var opts []Option
	switch cgroups.Mode() {
	case cgroups.Unified:
	case cgroups.Hybrid:
		opts = []Option{WithMode(cgroups.Unified), WithUnifiedMountpoint("/sys/fs/cgroup/unified")}
	default:
		t.Skip("no cgroup2 hierarchy on this host")
	}
	m, err := New(driver, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Unified() {
		t.Fatal("v2 manager does not run the v2 code")
	}
	return m
}

// cleanupCgroup deletes top at the end of the test, after the test's
// processes are gone (register it before starting them: cleanups run last
// first). Deleting can fail for a moment while killed processes exit.
func cleanupCgroup(t *testing.T, m *Manager, top string) {
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := m.Delete(top)
			if err == nil {
				if m.Exists(top) {
					t.Errorf("cleanup: %s still exists after Delete", top)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("cleanup: %v", err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// gatedProcess starts `sh -c 'read; script'` in its own process group: it
// waits on stdin until release is called, so that it can be moved into a
// cgroup before it does anything. The group is killed when the test ends.
type gatedProcess struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
}

func startGated(t *testing.T, script string) *gatedProcess {
	t.Helper()
	cmd := exec.Command("sh", "-c", "read _ ; "+script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &gatedProcess{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p
}

func (p *gatedProcess) pid() int { return p.cmd.Process.Pid }

func (p *gatedProcess) release(t *testing.T) {
	t.Helper()
	if _, err := p.stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
}

// kill kills the process group and waits for the shell.
func (p *gatedProcess) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

func (p *gatedProcess) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("process %d still running after %v", p.pid(), d)
	}
}

// procCgroups returns /proc/<pid>/cgroup as hierarchy ("" for v2,
// "memory", "name=systemd", "cpu,cpuacct") -> path.
func procCgroups(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 {
			out[parts[1]] = parts[2]
		}
	}
	return out
}

func readTrim(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// eventually retries f until it returns "" or d passes.
func eventually(t *testing.T, d time.Duration, f func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
