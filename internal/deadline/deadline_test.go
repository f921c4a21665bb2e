package deadline

import (
	"testing"
	"time"
)

func TestLazy(t *testing.T) {
	var l Lazy
	const timeout = 160 * time.Millisecond // slack: 10 ms
	first, set := l.Next(timeout)
	if !set {
		t.Fatal("no deadline in force, but Next did not ask to set one")
	}
	if d := time.Until(first); d <= timeout-5*time.Millisecond || d > timeout {
		t.Fatalf("deadline %v from now; want %v", d, timeout)
	}
	// Asked again at once: the deadline in force is within the slack.
	if at, set := l.Next(timeout); set || !at.Equal(first) {
		t.Fatalf("Next right after = %v, %v; want the deadline in force kept", at, set)
	}
	// A shorter timeout asks for an earlier deadline: always set.
	if at, set := l.Next(timeout / 2); !set || !at.Before(first) {
		t.Fatalf("Next with a shorter timeout = %v, %v; want an earlier deadline set", at, set)
	}
	// Back to the long timeout: the one in force ends 80 ms early, over the slack.
	if _, set := l.Next(timeout); !set {
		t.Fatal("a deadline 80 ms short of the one asked for was kept")
	}
	// Once the slack has passed, the deadline is renewed.
	kept, _ := l.Next(timeout)
	time.Sleep(timeout/Slack + 5*time.Millisecond)
	if at, set := l.Next(timeout); !set || !at.After(kept) {
		t.Fatalf("Next after the slack = %v, %v; want a later deadline set", at, set)
	}
	l.Reset()
	if _, set := l.Next(timeout); !set {
		t.Fatal("Next after Reset did not ask to set the deadline")
	}
}

// Whatever the calls, the deadline in force is never later than the one
// asked for, and never earlier by a slack or more.
func TestLazyBounds(t *testing.T) {
	var l Lazy
	for i, timeout := range []time.Duration{time.Second, time.Second, 3 * time.Second, time.Second, 2 * time.Second, 2 * time.Second} {
		before := time.Now()
		at, _ := l.Next(timeout)
		after := time.Now()
		if at.After(after.Add(timeout)) {
			t.Fatalf("call %d: deadline %v later than asked for", i, at.Sub(after))
		}
		if at.Before(before.Add(timeout - timeout/Slack)) {
			t.Fatalf("call %d: deadline %v earlier than the slack allows", i, at.Sub(before))
		}
	}
}
