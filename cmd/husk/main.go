// Command husk is the husk container runtime: `husk serve` runs the CRI
// daemon. What runs in and next to pods and containers is husk-runtime
// (cmd/husk-runtime), started by the daemon.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/husk-runtime/husk/network"
)

// version is set at build time by the Makefile.
var version = "0.1.0-dev"

const usage = `husk: a Kubernetes container runtime (CRI)

Usage:
  husk serve [flags]                     run the CRI daemon (husk serve --help lists its flags)
  husk default-cni-config [--dir DIR]    write the default pod network config into DIR
                                         (default /etc/cni/net.d) unless it has one
  husk version                           print the version
  husk help                              print this help

The daemon reads /etc/husk/config.toml (--config names another); flags
override it. deploy/config.toml shows every key with its default.
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
	case "default-cni-config":
		return defaultCNIConfig(args[1:], stdout, stderr)
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

func defaultCNIConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("husk default-cni-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "/etc/cni/net.d", "CNI config directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	wrote, err := network.WriteDefaultConfig(*dir)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "husk default-cni-config: %v\n", err)
		return 1
	}
	if wrote {
		_, _ = fmt.Fprintf(stdout, "wrote the default pod network config into %s\n", *dir)
	} else {
		_, _ = fmt.Fprintf(stdout, "%s already has a network config; left it alone\n", *dir)
	}
	return 0
}
