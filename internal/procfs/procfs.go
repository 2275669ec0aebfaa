// Package procfs reads what the kernel says of this boot in /proc.
package procfs

import (
	"os"
	"strings"
)

// BootID names this boot of the machine ("" if the kernel does not say):
// a pid, a start time or a page cache recorded under another one means
// nothing any more.
func BootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
