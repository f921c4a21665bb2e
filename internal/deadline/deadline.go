// Package deadline renews network deadlines lazily.
//
// Setting a deadline on a net.Conn modifies a timer in the Go runtime,
// and a timer that moves can wake an idle thread to watch it. A server
// that renews its deadlines before every read and write of a short SMTP
// dialogue pays that wake-up many times per message, on small machines
// a large share of its CPU time. A Lazy skips the renewal while the
// deadline in force ends less than a sixteenth of the timeout before the
// one asked for: a timeout of 5 minutes may then end up to about 19
// seconds early, never late.
package deadline

import "time"

// Slack is the fraction of the timeout by which a deadline in force may
// fall short of the one asked for before it is renewed: timeout/Slack.
const Slack = 16

// Lazy tracks one deadline (read or write) of one connection. The zero
// value has none in force. Every change to that deadline must go through
// Next, or be followed by Reset.
type Lazy struct{ at time.Time }

// Next returns the deadline timeout from now and true when it must be
// set, or false when the one in force is close enough to it.
func (l *Lazy) Next(timeout time.Duration) (time.Time, bool) {
	want := time.Now().Add(timeout)
	if !l.at.IsZero() && !want.Before(l.at) && want.Sub(l.at) < timeout/Slack {
		return l.at, false
	}
	l.at = want
	return want, true
}

// Reset forgets the deadline in force, so the next Next sets one. Call it
// after a deadline was set or cleared other than through Next.
func (l *Lazy) Reset() { l.at = time.Time{} }
