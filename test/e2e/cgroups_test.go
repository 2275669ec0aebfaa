package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"
)

// The e2e tests run on cgroup v1 hosts (this project's machine) and on
// pure cgroup v2 ones (make vm-test's guest): these read what either has.

// unifiedHost: /sys/fs/cgroup is the cgroup2 hierarchy itself.
var unifiedHost = func() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}()

// cgroupDir is a cgroup's directory in the pids hierarchy on v1 (every
// cgroup husk makes is in it), the only one on v2.
func cgroupDir(cgroup string) string {
	if unifiedHost {
		return filepath.Join("/sys/fs/cgroup", cgroup)
	}
	return filepath.Join("/sys/fs/cgroup/pids", cgroup)
}

// cgroupLimits reads a cgroup's memory limit and CPU weight, as v1 or v2
// writes them; noMemoryLimit and cpuWeight say what a test expects in the
// same terms.
func cgroupLimits(cgroup string) (memory, cpu string) {
	read := func(p ...string) string {
		b, _ := os.ReadFile(filepath.Join(p...))
		return strings.TrimSpace(string(b))
	}
	if unifiedHost {
		return read("/sys/fs/cgroup", cgroup, "memory.max"), read("/sys/fs/cgroup", cgroup, "cpu.weight")
	}
	return read("/sys/fs/cgroup/memory", cgroup, "memory.limit_in_bytes"), read("/sys/fs/cgroup/cpu", cgroup, "cpu.shares")
}

func noMemoryLimit() string {
	if unifiedHost {
		return "max"
	}
	return "9223372036854771712"
}

// cpuWeight is what cpu shares become: v1 keeps them, v2 converts them
// (0: the default).
func cpuWeight(shares uint64) string {
	if unifiedHost {
		if shares == 0 {
			return "100"
		}
		return fmt.Sprint(cgroup2.ConvertCPUSharesToCgroupV2Value(shares))
	}
	if shares == 0 {
		return "1024"
	}
	return fmt.Sprint(shares)
}

// e2eDriver is the cgroup driver the tests' daemons run with
// (HUSK_E2E_CGROUP_DRIVER, daemon_test.go).
func e2eDriver() string {
	if d := os.Getenv("HUSK_E2E_CGROUP_DRIVER"); d != "" {
		return d
	}
	return "cgroupfs"
}

// huskCgroupRoot is where pods without a cgroup_parent go.
func huskCgroupRoot() string {
	if e2eDriver() == "systemd" {
		return cgroupDir("/husk.slice")
	}
	return cgroupDir("/husk")
}

// removeCgroupDirs removes the directories of cgroups a test made itself
// (kubelet's, which husk only uses), deepest first, in every hierarchy.
func removeCgroupDirs(paths ...string) {
	roots := []string{"/sys/fs/cgroup"}
	if entries, err := os.ReadDir("/sys/fs/cgroup"); err == nil && !unifiedHost {
		for _, e := range entries {
			roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	for _, p := range paths {
		for _, r := range roots {
			_ = os.Remove(filepath.Join(r, p))
		}
	}
}
