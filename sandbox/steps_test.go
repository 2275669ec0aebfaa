package sandbox

import (
	"context"
	"errors"
	"io/fs"
	"testing"
)

func TestStepsNameTheFailedStep(t *testing.T) {
	st := newSteps(context.Background(), "CreateContainer", "app", "id", "c1")
	if err := st.done("recording it", nil); err != nil {
		t.Fatalf("a step without error failed: %v", err)
	}
	err := st.done("mounting the root filesystem (overlayfs)", fs.ErrPermission)
	if err == nil || err.Error() != "CreateContainer app: mounting the root filesystem (overlayfs): permission denied" {
		t.Errorf("failed step: %v", err)
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Errorf("the step's error is not wrapped: %v", err)
	}
}
