package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, floor uint64
		want        int
	}{
		{0, 32 * mib, 800},         // before the first collection: 800% of the 4 MiB minimum
		{1024, 32 * mib, 800},      // a tiny heap: the same
		{2 * mib, 32 * mib, 800},   // next collection at max(2×9, 32) MiB
		{8 * mib, 32 * mib, 300},   // at max(8×4, 12) MiB
		{16 * mib, 32 * mib, 100},  // twice the live heap is the floor already
		{100 * mib, 32 * mib, 100}, // a big heap: the default
		{2 * mib, 2 * mib, 100},    // a floor under the runtime's own
	} {
		if got := Percent(c.live, c.floor); got != c.want {
			t.Errorf("Percent(%d, %d) = %d; want %d", c.live, c.floor, got, c.want)
		}
	}
}

// gogc reads the GOGC in force.
func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// After a collection the tuner has raised GOGC for the small live heap of
// a test binary; stop puts back the default.
func TestFloor(t *testing.T) {
	t.Setenv("GOGC", "")
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	stop := Floor(64 << 20)
	deadline := time.Now().Add(10 * time.Second)
	for gogc() <= 100 {
		if time.Now().After(deadline) {
			t.Fatal("GOGC was not raised for a small live heap")
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	// It follows the live heap: still raised after more collections.
	for range 3 {
		runtime.GC()
	}
	time.Sleep(10 * time.Millisecond)
	if p := gogc(); p <= 100 {
		t.Fatalf("GOGC = %d after more collections; want it raised", p)
	}
	stop()
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	if p := gogc(); p != 100 {
		t.Fatalf("GOGC after stop = %d; want 100", p)
	}
}

// An operator's GOGC is left alone.
func TestFloorKeepsGOGCFromEnvironment(t *testing.T) {
	t.Setenv("GOGC", "50")
	defer debug.SetGCPercent(debug.SetGCPercent(50))
	stop := Floor(64 << 20)
	defer stop()
	for range 3 {
		runtime.GC()
	}
	time.Sleep(10 * time.Millisecond)
	if p := gogc(); p != 50 {
		t.Fatalf("GOGC = %d; want the 50 in force", p)
	}
}
