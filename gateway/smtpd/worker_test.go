package smtpd_test

import (
	"testing"
	"time"

	"github.com/sealgate/sealgate/gateway/smtpd"
)

// waitWorkers polls until cond holds for s's worker counts, or fails.
func waitWorkers(t *testing.T, s *smtpd.Server, within time.Duration, what string, cond func(started, alive, waiting int64) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		started, alive, waiting := smtpd.WorkerCounts(s)
		if cond(started, alive, waiting) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after %v workers started %d, alive %d, waiting %d", what, within, started, alive, waiting)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// quitSession greets, quits and waits for the server to hang up.
func quitSession(t *testing.T, addr string) {
	t.Helper()
	c := dialGreeted(t, addr)
	c.cmd("QUIT", "221")
	c.expectClosed()
}

// One connection after another is served by the same goroutine, which
// keeps the stack the last one grew.
func TestWorkerServesConnectionsInTurn(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, nil)
	for i := range 10 {
		quitSession(t, ts.addr)
		waitWorkers(t, ts.Server, 2*time.Second, "after a session", func(_, _, waiting int64) bool { return waiting == 1 })
		if started, _, _ := smtpd.WorkerCounts(ts.Server); started != 1 {
			t.Fatalf("after %d sequential connections %d workers were started, want 1", i+1, started)
		}
	}
	// Concurrent connections each get a worker of their own.
	var cs []*client
	for range 3 {
		cs = append(cs, dialGreeted(t, ts.addr))
	}
	for _, c := range cs {
		c.cmd("QUIT", "221")
		c.expectClosed()
	}
	waitWorkers(t, ts.Server, 2*time.Second, "after three at once", func(started, alive, waiting int64) bool {
		return started == 3 && alive == 3 && waiting == 3
	})
	be.waitLogout(t)
}

// A waiting worker ends when the server closes, without waiting out its
// linger time.
func TestWaitingWorkersEndAtClose(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"Close", "Shutdown"} {
		t.Run(how, func(t *testing.T) {
			ts := startServer(t, newBackend(), nil)
			quitSession(t, ts.addr)
			waitWorkers(t, ts.Server, 2*time.Second, "after the session", func(_, alive, waiting int64) bool { return alive == 1 && waiting == 1 })
			if how == "Close" {
				_ = ts.Server.Close()
			} else {
				if err := ts.Server.Shutdown(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			waitWorkers(t, ts.Server, smtpd.WorkerLinger/4, "after "+how, func(_, alive, _ int64) bool { return alive == 0 })
		})
	}
}

// An idle worker exits after its linger time.
func TestIdleWorkerExits(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newBackend(), nil)
	quitSession(t, ts.addr)
	waitWorkers(t, ts.Server, 2*time.Second, "after the session", func(_, alive, _ int64) bool { return alive == 1 })
	time.Sleep(smtpd.WorkerLinger / 2)
	if _, alive, _ := smtpd.WorkerCounts(ts.Server); alive != 1 {
		t.Fatalf("%d workers alive half-way through the linger time, want 1", alive)
	}
	waitWorkers(t, ts.Server, smtpd.WorkerLinger, "after the linger time", func(_, alive, _ int64) bool { return alive == 0 })
}
