package relay

import (
	"sync"
	"time"
)

// Pooled upstream connections. A new connection per message costs about
// a third of the relay's throughput at 4 KiB (PERFORMANCE.md): the TCP
// handshake, the greeting, EHLO (and STARTTLS), and QUIT. A connection goes
// back to the pool only after upstream accepted a message on it — the
// state in which SMTP (RFC 5321 §4.1.4) starts the next transaction from
// scratch — and never after any error, so no state crosses messages.
const (
	poolMaxIdle = 32               // idle connections kept
	poolMaxAge  = 10 * time.Second // idle time after which one is not reused
	poolMaxUses = 100              // messages per connection before a fresh one
)

type pooled struct {
	c    *client
	idle time.Time // when it was returned
	uses int
}

type pool struct {
	mu     sync.Mutex
	idle   []*pooled
	closed bool
}

// get returns the most recently used idle connection that is still
// fresh; older ones are closed.
func (p *pool) get(now time.Time) *pooled {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.idle) > 0 {
		pc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		// Bytes already read beyond the last reply make it unfit (what
		// upstream sends while it sits idle, a 421 before it closes, shows
		// up as the reply to MAIL: staleConn).
		if now.Sub(pc.idle) < poolMaxAge && pc.c.clean() {
			return pc
		}
		_ = pc.c.close()
	}
	return nil
}

// prune closes the idle connections that have aged out, oldest first (the
// bottom of the stack): get, which takes from the top, might not reach
// them while traffic is light. Called with p.mu held.
func (p *pool) prune(now time.Time) {
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idle) >= poolMaxAge {
		_ = p.idle[n].c.close()
		n++
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
}

// put keeps pc for reuse, or closes it with QUIT (bounded by timeout, on
// a goroutine of its own: the message is accepted, and its client's reply
// need not wait for upstream's goodbye) when the pool is full or closed.
func (p *pool) put(pc *pooled, now time.Time, timeout time.Duration) {
	p.mu.Lock()
	p.prune(now)
	if p.closed || len(p.idle) >= poolMaxIdle || pc.uses >= poolMaxUses {
		p.mu.Unlock()
		go pc.c.quit(timeout)
		return
	}
	defer p.mu.Unlock()
	pc.idle = now
	p.idle = append(p.idle, pc)
}

// close drops every idle connection; later puts close theirs.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, pc := range p.idle {
		go pc.c.quit(time.Second)
	}
	p.idle = nil
}
