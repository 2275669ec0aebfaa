package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/moby/sys/user"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// maxIDFile bounds what is read of an image's /etc/passwd or /etc/group: an
// image could make it arbitrarily large.
const maxIDFile = 16 << 20

const scField = "config.linux.security_context."

// resolveUser picks the user the CRI security context names, else the
// image's USER, and resolves it against the image's own /etc/passwd and
// /etc/group. It returns the user and its home directory ("" if unknown).
func resolveUser(rootfs string, sc *runtimeapi.LinuxContainerSecurityContext, imageUser string) (specs.User, string, error) {
	var userArg, groupArg, userField, groupField string
	switch {
	case sc.GetRunAsUsername() != "" && sc.GetRunAsUser() != nil:
		return specs.User{}, "", invalid(scField+"run_as_username", "only one of run_as_user and run_as_username may be set")
	case sc.GetRunAsUsername() != "":
		userArg, userField = sc.GetRunAsUsername(), scField+"run_as_username"
	case sc.GetRunAsUser() != nil:
		userArg, userField = strconv.FormatInt(sc.GetRunAsUser().GetValue(), 10), scField+"run_as_user"
	}
	if g := sc.GetRunAsGroup(); g != nil {
		if userArg == "" {
			return specs.User{}, "", invalid(scField+"run_as_group", "set without run_as_user or run_as_username")
		}
		groupArg, groupField = strconv.FormatInt(g.GetValue(), 10), scField+"run_as_group"
	}
	if userArg == "" {
		userArg, groupArg, _ = strings.Cut(imageUser, ":")
		userField, groupField = "image config User", "image config User"
	}

	var passwd, group []byte
	if rootfs != "" {
		var err error
		if passwd, err = readInRoot(rootfs, "/etc/passwd"); err != nil {
			return specs.User{}, "", err
		}
		if group, err = readInRoot(rootfs, "/etc/group"); err != nil {
			return specs.User{}, "", err
		}
	}

	// Only the user part goes to GetExecUser: given "user:group" it would
	// skip the user's memberships, which Kubernetes wants merged.
	if userArg == "" {
		userArg = "0"
	}
	if err := checkID(userArg, userField); err != nil {
		return specs.User{}, "", err
	}
	eu, err := user.GetExecUser(userArg, nil, reader(passwd), reader(group))
	if err != nil {
		if errors.Is(err, user.ErrNoPasswdEntries) || errors.Is(err, user.ErrNoGroupEntries) {
			return specs.User{}, "", invalid(userField, "user %q not found in the image's /etc/passwd", userArg)
		}
		return specs.User{}, "", fmt.Errorf("%s: resolving user %q in the image: %w", userField, userArg, err)
	}

	gid := eu.Gid
	if groupArg != "" {
		if err := checkID(groupArg, groupField); err != nil {
			return specs.User{}, "", err
		}
		if gid, err = lookupGroup(groupArg, group); err != nil {
			return specs.User{}, "", fmt.Errorf("%s: %w", groupField, err)
		}
	}

	// The primary group comes first, as containerd lists it, so that a
	// process dropping to its additional groups keeps it.
	gids := []uint32{uint32(gid)}
	add := func(g uint32) {
		if !slices.Contains(gids, g) {
			gids = append(gids, g)
		}
	}
	if sc.GetSupplementalGroupsPolicy() != runtimeapi.SupplementalGroupsPolicy_Strict {
		for _, g := range eu.Sgids {
			add(uint32(g))
		}
	}
	for i, g := range sc.GetSupplementalGroups() {
		if g < 0 || g > maxID {
			return specs.User{}, "", invalid(fmt.Sprintf(scField+"supplemental_groups[%d]", i), "%d is not a valid group id", g)
		}
		add(uint32(g))
	}
	return specs.User{UID: uint32(eu.Uid), GID: uint32(gid), AdditionalGids: gids}, eu.Home, nil
}

// maxID is the largest valid id: (uint32)-1 means "no change" to setuid.
const maxID = 1<<32 - 2

// checkID rejects numeric ids the kernel would not accept; names pass.
func checkID(s, field string) error {
	if s == "" || strings.TrimLeft(s, "-0123456789") != "" {
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > maxID {
		return invalid(field, "%q is not a valid id", s)
	}
	return nil
}

func lookupGroup(arg string, group []byte) (int, error) {
	if n, err := strconv.Atoi(arg); err == nil {
		return n, nil
	}
	var found []user.Group
	if group != nil {
		var err error
		found, err = user.ParseGroupFilter(bytes.NewReader(group), func(g user.Group) bool { return g.Name == arg })
		if err != nil {
			return 0, fmt.Errorf("parsing the image's /etc/group: %w", err)
		}
	}
	if len(found) == 0 {
		return 0, fmt.Errorf("group %q not found in the image's /etc/group: %w", arg, errInvalid)
	}
	return found[0].Gid, nil
}

// reader avoids handing GetExecUser a typed nil, which it would read as an
// empty file rather than a missing one.
func reader(b []byte) io.Reader {
	if b == nil {
		return nil
	}
	return bytes.NewReader(b)
}

// readInRoot reads a file of the container's rootfs, resolving symlinks as if
// rootfs were "/", and only if it is a regular file (a FIFO would block the
// open, a device could be anything). A missing file is nil, no error.
func readInRoot(rootfs, name string) ([]byte, error) {
	h, err := pathrs.OpenInRoot(rootfs, name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("opening %s in the container's rootfs: %w", name, err)
	}
	defer h.Close() //nolint:errcheck // O_PATH handle, read only
	var st unix.Stat_t
	if err := unix.Fstat(int(h.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat %s in the container's rootfs: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s in the container's rootfs is not a regular file: %w", name, errInvalid)
	}
	f, err := pathrs.Reopen(h, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("opening %s in the container's rootfs: %w", name, err)
	}
	defer f.Close() //nolint:errcheck // read only
	b, err := io.ReadAll(io.LimitReader(f, maxIDFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s in the container's rootfs: %w", name, err)
	}
	if len(b) > maxIDFile {
		return nil, fmt.Errorf("%s in the container's rootfs is larger than %d bytes: %w", name, maxIDFile, errInvalid)
	}
	return b, nil
}
