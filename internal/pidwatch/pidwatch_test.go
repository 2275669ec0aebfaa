package pidwatch

import (
	"os/exec"
	"testing"
	"time"
)

func sleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

func yes() bool { return true }

func TestWatcherReportsEndsOnce(t *testing.T) {
	ended := make(chan string, 10)
	w, err := New(func(key string) { ended <- key })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	a, b, c := sleeper(t), sleeper(t), sleeper(t)
	for key, cmd := range map[string]*exec.Cmd{"a": a, "b": b, "c": c} {
		if err := w.Add(key, cmd.Process.Pid, yes); err != nil {
			t.Fatal(err)
		}
	}
	// Re-adding a key replaces its process: c's end is reported as "b".
	if err := w.Add("b", c.Process.Pid, yes); err != nil {
		t.Fatal(err)
	}
	w.Remove("c")
	if got := w.Len(); got != 2 {
		t.Fatalf("watching %d processes, want 2", got)
	}
	_ = b.Process.Kill() // "b" no longer watches it
	_ = a.Process.Kill()
	select {
	case key := <-ended:
		if key != "a" {
			t.Fatalf("ended %q, want a", key)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a's end was not reported")
	}
	_ = c.Process.Kill()
	select {
	case key := <-ended:
		if key != "b" {
			t.Fatalf("ended %q, want b", key)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("c's end was not reported under b")
	}
	select {
	case key := <-ended:
		t.Fatalf("%q reported twice or after its removal", key)
	case <-time.After(200 * time.Millisecond):
	}
	if got := w.Len(); got != 0 {
		t.Fatalf("still watching %d processes", got)
	}
}

func TestWatcherRefusesAProcessThatIsNotOurs(t *testing.T) {
	w, err := New(func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cmd := sleeper(t)
	if err := w.Add("x", cmd.Process.Pid, func() bool { return false }); err == nil {
		t.Fatal("Add watched a process its check said is not the recorded one")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err := w.Add("x", cmd.Process.Pid, yes); err == nil {
		t.Fatal("Add watched a process that has ended")
	}
	if w.Len() != 0 {
		t.Fatal("a refused process is watched")
	}
}

func TestClosedWatcherRefusesAdds(t *testing.T) {
	w, err := New(func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	w.Close()
	if err := w.Add("x", sleeper(t).Process.Pid, yes); err == nil {
		t.Fatal("a closed watcher took a process")
	}
}
