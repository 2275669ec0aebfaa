// Command husk is the husk container runtime: `husk serve` runs the CRI
// daemon. Other subcommands that the daemon runs itself as are internal and
// not listed in the help.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
)

// version is set at build time by the Makefile.
var version = "0.1.0-dev"

const usage = `husk: a Kubernetes container runtime (CRI)

Usage:
  husk serve [flags]   run the CRI daemon (husk serve --help lists its flags)
  husk version         print the version
  husk help            print this help
`

// The main goroutine keeps the main thread. Namespaces are entered and made
// on threads that are then thrown away; Go cannot throw away the main
// thread, and the daemon's own namespaces, as tools see them in
// /proc/<pid>/ns, must stay the host's.
func init() { runtime.LockOSThread() }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		_, _ = fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "version", "--version", "-version":
		_, _ = fmt.Fprintf(stdout, "husk %s (%s, %s/%s)\nCRI API: v1\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "--help", "-help", "-h":
		_, _ = fmt.Fprint(stdout, usage)
		return 0
	default:
		_, _ = fmt.Fprintf(stderr, "husk: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
