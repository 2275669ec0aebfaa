// Command husk-runtime is what the husk daemon runs for pods and
// containers, never run by hand: the container monitor, the pod init and
// the entry for exec (C constructors, oci/runtime/shim), and the container
// side of the built-in runtime (oci/runtime/linux). It is its own small
// binary because each container start and each exec runs its Go part: the
// daemon's binary, with gRPC, the image store and their package
// initialisation, took three times as long to start.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/husk-runtime/husk/oci/runtime/linux"
	_ "github.com/husk-runtime/husk/oci/runtime/shim" // monitor, pod-init, exec-enter, exec-server
)

// version is set at build time by the Makefile; the daemon refuses a
// husk-runtime whose version is not its own.
var version = "0.1.0-dev"

// The main goroutine keeps the main thread, which is the one in the
// container's namespaces.
func init() { runtime.LockOSThread() }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		_, _ = fmt.Fprintln(stderr, "husk-runtime is run by the husk daemon, not by hand")
		return 2
	}
	switch args[0] {
	case "container-init":
		// A container's first process, until it executes the
		// container's command.
		return linux.Init(args[1:])
	case "exec-init":
		// A process started in a running container.
		return linux.Exec(args[1:])
	case "monitor", "pod-init", "exec-enter", "exec-server", "hold":
		// Run by constructors before Go starts; reaching here means cgo
		// was off when this binary was built.
		_, _ = fmt.Fprintf(stderr, "husk-runtime %s: this binary was built without cgo\n", args[0])
		return 1
	case "version":
		_, _ = fmt.Fprintf(stdout, "husk-runtime %s\n", version)
		return 0
	default:
		_, _ = fmt.Fprintf(stderr, "husk-runtime: unknown command %q\n", args[0])
		return 2
	}
}
