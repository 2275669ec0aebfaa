package spec

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StopSignal is the signal StopContainer sends first: the image's
// STOPSIGNAL (names like "SIGQUIT", "QUIT" or numbers) or SIGTERM.
func StopSignal(img ocispec.ImageConfig) (syscall.Signal, error) {
	if img.StopSignal == "" {
		return unix.SIGTERM, nil
	}
	sig, err := ParseSignal(img.StopSignal)
	if err != nil {
		return 0, fmt.Errorf("image config StopSignal: %w", err)
	}
	return sig, nil
}

// ContainerStopSignal prefers the container's own stop signal (CRI
// ContainerConfig.stop_signal, from the pod's lifecycle.stopSignal) over
// the image's.
func ContainerStopSignal(cfg *runtimeapi.ContainerConfig, img ocispec.ImageConfig) (syscall.Signal, error) {
	if s := cfg.GetStopSignal(); s != runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		sig, err := ParseSignal(strings.TrimPrefix(s.String(), "SIGNAL_"))
		if err != nil {
			return 0, invalid("config.stop_signal", "%v", err)
		}
		return sig, nil
	}
	return StopSignal(img)
}

// sigRTMin and sigRTMax are the real-time signal range programs see:
// glibc reserves the kernel's first two for its threads.
const (
	sigRTMin = 34
	sigRTMax = 64
)

// ParseSignal reads a signal as Docker does: a number, or a name with or
// without "SIG", in any case, including "RTMIN+n" and "RTMAX-n".
func ParseSignal(s string) (syscall.Signal, error) {
	bad := fmt.Errorf("invalid signal %q: %w", s, errInvalid)
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > sigRTMax {
			return 0, bad
		}
		return syscall.Signal(n), nil
	}
	name := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "SIG")
	for _, rt := range []struct {
		prefix string
		base   int
		sign   int
	}{{"RTMIN", sigRTMin, 1}, {"RTMAX", sigRTMax, -1}} {
		rest, ok := strings.CutPrefix(name, rt.prefix)
		if !ok {
			continue
		}
		off := 0
		if rest != "" {
			// "+3" as images write it, "PLUS3" as the CRI's enum does.
			want, word := "+", "PLUS"
			if rt.sign < 0 {
				want, word = "-", "MINUS"
			}
			num, ok := strings.CutPrefix(rest, want)
			if !ok {
				num, ok = strings.CutPrefix(rest, word)
			}
			n, err := strconv.Atoi(num)
			if !ok || err != nil || n < 0 {
				return 0, bad
			}
			off = n
		}
		sig := rt.base + rt.sign*off
		if sig < sigRTMin || sig > sigRTMax {
			return 0, bad
		}
		return syscall.Signal(sig), nil
	}
	if sig := unix.SignalNum("SIG" + name); sig != 0 {
		return sig, nil
	}
	// Old names the CRI's enum has too, which SignalNum does not know.
	if sig, ok := map[string]syscall.Signal{"IOT": unix.SIGABRT, "CLD": unix.SIGCHLD, "POLL": unix.SIGIO}[name]; ok {
		return sig, nil
	}
	return 0, bad
}

// CRISignal names sig as the CRI's Signal enum does (SIGNAL_SIGTERM,
// SIGNAL_SIGRTMINPLUS3, SIGNAL_SIGRTMAXMINUS2, ...), for ContainerStatus.
func CRISignal(sig syscall.Signal) runtimeapi.Signal {
	name := unix.SignalName(sig)
	switch n := int(sig); {
	case n == sigRTMin:
		name = "SIGRTMIN"
	case n > sigRTMin && n <= sigRTMin+15:
		name = fmt.Sprintf("SIGRTMINPLUS%d", n-sigRTMin)
	case n == sigRTMax:
		name = "SIGRTMAX"
	case n < sigRTMax && n > sigRTMin+15:
		name = fmt.Sprintf("SIGRTMAXMINUS%d", sigRTMax-n)
	}
	return runtimeapi.Signal(runtimeapi.Signal_value["SIGNAL_"+name])
}
