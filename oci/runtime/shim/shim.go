// Package shim holds the C programs of husk-runtime that run as
// constructors, before the Go runtime starts, when the binary is executed
// with their subcommand: the container monitor (monitor.c), the init of a
// pod's shared PID namespace (podinit.c), the entry into a running
// container for exec (exec.c), the maker of ExecSync's processes
// (exec_server.c), and the holder of a new pod's user
// namespace (hold.c). Without a Go runtime each costs about what a
// small C program costs, which matters for the monitor, one per container
// for its whole life. A binary gets them by importing this package.
//
// The binary is linked static: a monitor or pod init then maps no libc.so
// (1.4 MiB of its resident pages were libc's), and exec-init, a Go program
// run for each exec, starts without the dynamic loader. libseccomp's
// archive comes with libseccomp-dev.
package shim

// #cgo LDFLAGS: -static
import "C"
