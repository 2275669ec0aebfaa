package sandbox

// monitor.c runs `husk monitor` before the Go runtime starts.
