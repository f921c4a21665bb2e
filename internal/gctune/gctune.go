// Package gctune keeps the garbage collector from running too often while
// the live heap is small.
//
// With the default GOGC=100 the collector runs whenever the heap doubles;
// a gateway whose live heap is 2 MiB then collects every 2 MiB or so of
// allocation, which at thousands of messages a second is dozens of
// collections a second, each with its stop-the-world phases, mark work and
// wake-ups of idle threads: a quarter of the process's CPU time in
// sealgate's benchmark. Floor raises GOGC after each collection so that
// the next one comes when the heap reaches a floor (or twice the live
// heap, whichever is more): a bounded amount of memory for far fewer
// collections. Once the live heap is half the floor or more, GOGC is back
// at 100 and nothing changes.
package gctune

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// runtimeHeapMinimum is the Go runtime's heap goal floor at GOGC=100
// (defaultHeapMinimum, 4 MiB); the runtime scales it with GOGC, so a GOGC
// of p never lets a collection come before p/100 × 4 MiB of heap.
const runtimeHeapMinimum = 4 << 20

// Percent returns the GOGC that puts the next collection at about floor
// bytes of heap for a live heap of live bytes, and never under 100. The
// runtime's goal is the larger of live × (1 + GOGC/100) and its scaled
// minimum, so both are kept at or under floor.
func Percent(live, floor uint64) int {
	p := floor * 100 / runtimeHeapMinimum
	if live > 0 {
		p = min(p, floor*100/live-min(100, floor*100/live))
	}
	return int(max(p, 100))
}

// Floor keeps the heap goal at floor bytes or more until stop is called,
// which restores GOGC=100. It does nothing when GOGC is set in the
// environment: the operator's setting stands.
func Floor(floor uint64) (stop func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	t := &tuner{floor: floor, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.tune()
	t.arm()
	return func() {
		if t.stopped.CompareAndSwap(false, true) {
			debug.SetGCPercent(100)
		}
	}
}

type tuner struct {
	floor   uint64
	stopped atomic.Bool
	sample  []metrics.Sample // used only on the finalizer goroutine (and once in Floor)
}

// tune sets GOGC for the live heap the last collection found.
func (t *tuner) tune() {
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	debug.SetGCPercent(Percent(t.sample[0].Value.Uint64(), t.floor))
}

// sentinel is garbage as soon as it is made; its finalizer runs after the
// collection that finds it, i.e. once per collection cycle.
type sentinel struct{ t *tuner }

func (t *tuner) arm() {
	s := &sentinel{t: t}
	runtime.SetFinalizer(s, func(s *sentinel) {
		if s.t.stopped.Load() {
			return
		}
		s.t.tune()
		s.t.arm()
	})
}
