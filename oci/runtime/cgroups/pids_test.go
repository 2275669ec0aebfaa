package cgroups

import (
	"fmt"
	"os/exec"
	"slices"
	"testing"
)

// Pids of a tree whose children are deleted meanwhile (a container's cgroup
// removed while its pod's is listed) lists the processes that stay, never
// an error: the walk met cgroup.procs files that vanished (ENOENT) or were
// removed after they were opened (ENODEV).
func TestPidsWhileChildrenVanish(t *testing.T) {
	for name, get := range map[string]func(*testing.T, Driver) *Manager{"v1": v1Manager, "v2": v2Manager} {
		t.Run(name, func(t *testing.T) {
			m := get(t, Cgroupfs)
			top := "/" + uniqueName(t)
			cleanupCgroup(t, m, top)
			if err := m.Create(top, nil); err != nil {
				t.Fatal(err)
			}
			keep := top + "/keep"
			if err := m.Create(keep, nil); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("sleep", "60")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			if err := m.AddProcess(keep, cmd.Process.Pid); err != nil {
				t.Fatal(err)
			}
			for round := range 20 {
				var children []string
				for i := range 30 {
					c := fmt.Sprintf("%s/c%d-%d", top, round, i)
					if err := m.Create(c, nil); err != nil {
						t.Fatal(err)
					}
					children = append(children, c)
				}
				done := make(chan error, 1)
				go func() {
					for _, c := range children {
						if err := m.Delete(c); err != nil {
							done <- err
							return
						}
					}
					done <- nil
				}()
				for listing := true; listing; {
					select {
					case err := <-done:
						if err != nil {
							t.Fatal(err)
						}
						listing = false
					default:
					}
					pids, err := m.Pids(top)
					if err != nil || !slices.Contains(pids, cmd.Process.Pid) {
						t.Fatalf("round %d: Pids while children are deleted: %v, %v (want %d among them)", round, pids, err, cmd.Process.Pid)
					}
				}
			}
		})
	}
}
