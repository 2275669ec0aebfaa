package sandbox

// podinit.c runs `husk pod-init` before the Go runtime starts.

import "C"
