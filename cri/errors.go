package cri

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// toStatus is the one place where an error becomes a gRPC status: the
// packages below classify their errors with errdefs sentinels and know
// nothing of gRPC.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codeOf(err), err.Error())
}

func codeOf(err error) codes.Code {
	switch {
	case errdefs.IsInvalidArgument(err):
		return codes.InvalidArgument
	case errdefs.IsNotFound(err):
		return codes.NotFound
	case errdefs.IsAlreadyExists(err):
		return codes.AlreadyExists
	case errdefs.IsPermissionDenied(err):
		return codes.PermissionDenied
	case errdefs.IsUnauthorized(err):
		return codes.Unauthenticated
	case errdefs.IsResourceExhausted(err):
		return codes.ResourceExhausted
	case errdefs.IsFailedPrecondition(err), errdefs.IsConflict(err):
		return codes.FailedPrecondition
	case errdefs.IsAborted(err):
		return codes.Aborted
	case errdefs.IsNotImplemented(err):
		return codes.Unimplemented
	case errdefs.IsUnavailable(err):
		return codes.Unavailable
	case errdefs.IsDataLoss(err):
		return codes.DataLoss
	case errdefs.IsInternal(err):
		return codes.Internal
	}
	return codes.Unknown
}

// invalid reports a bad request field. Messages name the field as the CRI
// spells it, so that a user of crictl or a kubelet log can find it.
func invalid(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, args...))
}

// withField names the request field in an invalid-argument error that
// comes from below, where the field's name is not known.
func withField(field string, err error) error {
	if errdefs.IsInvalidArgument(err) {
		return status.Errorf(codes.InvalidArgument, "%s: %v", field, err)
	}
	return err
}
