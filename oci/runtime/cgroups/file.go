package cgroups

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// fileReader reads cgroup files: every value statsV1 reports, what
// statsV2 reads beside the cgroup2 package, and the freezer's state. It
// opens, reads and closes with plain syscalls: os.Open registers each
// cgroupfs file with the poller (they can be polled), two more syscalls a
// value, and v1's stats read hundreds of files at hundreds of pods. The
// first error other than a missing file is kept; a missing file leaves its
// values zero (a controller not mounted, a kernel without the file, a
// key that is not there).
type fileReader struct {
	buf [8192]byte
	err error
	// found counts the files that were there.
	found int
}

// read returns the content of a cgroupfs file, or nil when it is missing
// or an error was met.
func (r *fileReader) read(file string) []byte {
	if r.err != nil {
		return nil
	}
	fd, err := unix.Open(file, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if gone(err) {
		return nil
	}
	if err != nil {
		r.err = fmt.Errorf("open %s: %w", file, err)
		return nil
	}
	defer func() { _ = unix.Close(fd) }()
	r.found++
	n := 0
	for {
		k, err := unix.Read(fd, r.buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			r.err = fmt.Errorf("read %s: %w", file, err)
			return nil
		}
		n += k
		// A cgroupfs file is a seq_file: one read returns all of it
		// that fits, so a short read is its end.
		if k == 0 || n < len(r.buf) {
			return r.buf[:n]
		}
		r.err = fmt.Errorf("read %s: larger than %d bytes", file, len(r.buf))
		return nil
	}
}

// value reads a single-number file; "max" (v2's limits, pids.max) is 0,
// no limit.
func (r *fileReader) value(file string) uint64 {
	b := bytes.TrimSpace(r.read(file))
	if len(b) == 0 || string(b) == "max" {
		return 0
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("%s: %w", file, err)
	}
	return n
}

// limit reads a limit file; "max" and v1's page-counter maximum are no
// limit, 0.
func (r *fileReader) limit(file string) uint64 {
	if n := r.value(file); n < v1NoLimit {
		return n
	}
	return 0
}

// keyed is one wanted line of a flat keyed file and where its value goes.
type keyed struct {
	key string
	dst *uint64
}

// keys reads the wanted values of a flat keyed file ("key value" lines)
// and reports whether the file has each of them.
func (r *fileReader) keys(file string, want ...keyed) (found int) {
	b := r.read(file)
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		k, v, _ := bytes.Cut(line, []byte{' '})
		for _, w := range want {
			if string(k) != w.key {
				continue
			}
			n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				if r.err == nil {
					r.err = fmt.Errorf("%s: %s: %w", file, k, err)
				}
				return found
			}
			*w.dst = n
			found++
		}
	}
	return found
}
