// Package procfs reads what the kernel says of this boot in /proc.
package procfs

import (
	"os"
	"strings"
	"sync"
)

// BootID names this boot of the machine ("" if the kernel does not say):
// a pid, a start time or a page cache recorded under another one means
// nothing any more. Read once: a process lives in one boot, and every
// liveness check of a container's monitor asks for it.
var BootID = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})
