package cri

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestEveryErrorHasItsCode: each errdefs sentinel the packages below
// return, wrapped as they wrap it, becomes its gRPC code, with the message
// kept whole.
func TestEveryErrorHasItsCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		code codes.Code
	}{
		{errdefs.ErrInvalidArgument, codes.InvalidArgument},
		{errdefs.ErrNotFound, codes.NotFound},
		{errdefs.ErrAlreadyExists, codes.AlreadyExists},
		{errdefs.ErrPermissionDenied, codes.PermissionDenied},
		{errdefs.ErrUnauthenticated, codes.Unauthenticated},
		{errdefs.ErrResourceExhausted, codes.ResourceExhausted},
		{errdefs.ErrFailedPrecondition, codes.FailedPrecondition},
		{errdefs.ErrConflict, codes.FailedPrecondition},
		{errdefs.ErrAborted, codes.Aborted},
		{errdefs.ErrNotImplemented, codes.Unimplemented},
		{errdefs.ErrUnavailable, codes.Unavailable},
		{errdefs.ErrDataLoss, codes.DataLoss},
		{errdefs.ErrInternal, codes.Internal},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{errors.New("something else"), codes.Unknown},
	} {
		wrapped := fmt.Errorf("CreateContainer app: creating its cgroup: %w", c.err)
		st, ok := status.FromError(toStatus(wrapped))
		if !ok || st.Code() != c.code || st.Message() != wrapped.Error() {
			t.Errorf("%v: %v %q; want %v %q", c.err, st.Code(), st.Message(), c.code, wrapped.Error())
		}
	}
	if toStatus(nil) != nil {
		t.Error("nil became an error")
	}
	// A status made here already (a field named by invalid) stays.
	if st, _ := status.FromError(toStatus(invalid("config.image", "empty"))); st.Code() != codes.InvalidArgument || st.Message() != "config.image: empty" {
		t.Errorf("a status was changed: %v", st)
	}
}

func TestWithFieldNamesTheField(t *testing.T) {
	err := withField("config.linux.resources", fmt.Errorf("cpu_quota: %w", errdefs.ErrInvalidArgument))
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || st.Message() != "config.linux.resources: cpu_quota: invalid argument" {
		t.Errorf("withField: %v", err)
	}
	other := fmt.Errorf("disk: %w", errdefs.ErrUnavailable)
	if withField("x", other) != other {
		t.Error("withField changed an error that is not about the request")
	}
}
