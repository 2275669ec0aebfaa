package linux

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/husk-runtime/husk/oci/runtime/monitor"
)

// consoleEnv names the descriptor of a unix socket on which the process's
// terminal is to be sent: set for a container with a terminal (by its
// monitor) and for an exec with one (by the daemon).
const consoleEnv = monitor.EnvConsoleFD

// consoleSyncEnv, when set, makes the process wait after sending its
// terminal until the sender writes a byte or closes the socket: the daemon
// first gives the terminal the client's size, which a command that reads
// it at once (stty size, a full-screen program's first frame) would miss.
const consoleSyncEnv = monitor.EnvConsoleSync

// setupConsole gives the process a terminal of the container's own: a
// pseudo-terminal of the devpts at /dev/pts of its mount namespace (so
// `tty` names a device the container sees, and no terminal of the host's is
// inside it). The master goes back on the socket; the slave, owned by the
// container's user, becomes stdin, stdout, stderr and the controlling
// terminal of the process's session. Without consoleEnv it does nothing.
func setupConsole(uid uint32) error {
	v := os.Getenv(consoleEnv)
	if v == "" {
		return nil
	}
	_ = os.Unsetenv(consoleEnv)
	sync := os.Getenv(consoleSyncEnv) != ""
	_ = os.Unsetenv(consoleSyncEnv)
	sock, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("%s=%q", consoleEnv, v)
	}
	defer func() { _ = unix.Close(sock) }()
	// The container may own the path: it must lead to a ptmx device, and
	// the slave is taken from the master, not looked up by name.
	master, err := unix.Open("/dev/pts/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the container's /dev/pts/ptmx: %w", err)
	}
	defer func() { _ = unix.Close(master) }()
	var st unix.Stat_t
	if err := unix.Fstat(master, &st); err != nil {
		return fmt.Errorf("the container's /dev/pts/ptmx: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 5 || unix.Minor(st.Rdev) != 2 {
		return fmt.Errorf("the container's /dev/pts/ptmx is not a pseudo-terminal multiplexer")
	}
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("unlocking the terminal: %w", err)
	}
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(master), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		return fmt.Errorf("opening the terminal's slave: %w", errno)
	}
	slave := int(r)
	defer func() { _ = unix.Close(slave) }()
	// Programs reopen their terminal by name (tty, password prompts).
	if err := unix.Fchown(slave, int(uid), -1); err != nil {
		return fmt.Errorf("giving the terminal to the user: %w", err)
	}
	if err := unix.Sendmsg(sock, []byte{0}, unix.UnixRights(master), nil, unix.MSG_NOSIGNAL); err != nil {
		return fmt.Errorf("sending the terminal: %w", err)
	}
	if sync {
		var b [1]byte
		for {
			if _, err := unix.Read(sock, b[:]); err != unix.EINTR {
				break
			}
		}
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(slave, fd, 0); err != nil {
			return fmt.Errorf("dup3: %w", err)
		}
	}
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("taking the terminal as controlling terminal: %w", err)
	}
	return nil
}
