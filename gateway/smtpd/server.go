package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Server accepts SMTP connections. Every limit and timeout must be
// positive: Serve refuses zero values rather than reading them as
// "unlimited".
type Server struct {
	Hostname  string      // in the greeting and replies
	TLSConfig *tls.Config // nil: STARTTLS is not offered

	MaxMessageBytes int64 // SIZE; larger messages get 552 5.3.4
	MaxRecipients   int   // more get 452 4.5.3
	MaxLineLength   int   // command lines and DATA lines, without CRLF
	MaxErrors       int   // bad commands before the connection is closed (0: 10)

	// CommandTimeout bounds the wait for each command line.
	CommandTimeout time.Duration
	// DataTimeout bounds the wait for message data: it is renewed each
	// time another DataBlock bytes of DATA or BDAT arrived, so a client
	// must keep a minimum rate rather than merely keep sending.
	DataTimeout  time.Duration
	WriteTimeout time.Duration // per flush of replies

	Backend Backend
	Logger  *slog.Logger

	closing  atomic.Bool
	mu       sync.Mutex
	lns      map[net.Listener]struct{}
	conns    map[*conn]struct{}
	inflight sync.WaitGroup

	// handoff passes a new connection to a worker waiting for one (see
	// worker); stop ends the waiting workers at Shutdown or Close.
	handoff  chan *conn
	stop     chan struct{}
	stopOnce sync.Once
	// Worker counts, for tests: started in all, alive now, waiting now.
	workersStarted, workersAlive, workersWaiting atomic.Int64
}

// workerLinger is how long a worker goroutine waits for another connection
// after its last one ended, before it exits.
//
// Why workers: a connection's goroutine needs a deep stack for a moment
// (SQLite, IDNA, the OpenPGP and S/MIME code), and a new goroutine's stack
// starts small and is copied each time it doubles. Many clients send one
// message per connection, and under such load the copying was about 4% of
// the gateway's CPU. A worker serves one connection after another and
// keeps its grown stack until the garbage collector shrinks it.
const workerLinger = 2 * time.Second

// DataBlock is how much data must arrive within one DataTimeout.
const DataBlock = 64 << 10

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("smtpd: server closed")

func (s *Server) check() error {
	switch {
	case s.Hostname == "":
		return errors.New("smtpd: Hostname is required")
	case s.Backend == nil || s.Logger == nil:
		return errors.New("smtpd: Backend and Logger are required")
	case s.MaxMessageBytes <= 0 || s.MaxRecipients <= 0 || s.MaxLineLength <= 0:
		return errors.New("smtpd: size and count limits must be positive")
	case s.CommandTimeout <= 0 || s.DataTimeout <= 0 || s.WriteTimeout <= 0:
		return errors.New("smtpd: timeouts must be positive")
	}
	return nil
}

// Serve accepts connections on l until Shutdown or Close, handling each
// on its own goroutine.
func (s *Server) Serve(l net.Listener) error {
	if err := s.check(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if s.lns == nil {
		s.lns = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
		s.handoff, s.stop = make(chan *conn), make(chan struct{})
	}
	s.lns[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.Logger.Warn("smtp accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := newConn(s, nc)
		if !s.track(c) {
			_ = nc.Close()
			return ErrServerClosed
		}
		select {
		case s.handoff <- c: // a worker was waiting
		default:
			go s.worker(c)
		}
	}
}

// worker serves c, then any connection handed to it within workerLinger
// of the last one ending.
func (s *Server) worker(c *conn) {
	s.workersStarted.Add(1)
	s.workersAlive.Add(1)
	defer s.workersAlive.Add(-1)
	idle := time.NewTimer(workerLinger)
	defer idle.Stop()
	for {
		c.serve()
		idle.Reset(workerLinger)
		s.workersWaiting.Add(1)
		select {
		case c = <-s.handoff:
			s.workersWaiting.Add(-1)
		case <-idle.C:
			s.workersWaiting.Add(-1)
			return
		case <-s.stop:
			s.workersWaiting.Add(-1)
			return
		}
	}
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.inflight.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.inflight.Done()
}

// Shutdown stops accepting connections, closes the idle ones, lets every
// transaction in flight finish (its connection is closed right after its
// reply, with 421), and returns once all connections are gone. When ctx
// ends first, the rest are closed at once (nothing of theirs was
// acknowledged, so their clients retry) and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopAccepting()
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s.closeIdle()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			s.closeAll()
			<-done
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.stopAccepting()
	s.closeAll()
	s.inflight.Wait()
	return nil
}

func (s *Server) stopAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing.Store(true)
	if s.stop != nil {
		s.stopOnce.Do(func() { close(s.stop) })
	}
	for l := range s.lns {
		_ = l.Close()
	}
}

func (s *Server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connShut) {
			_ = c.raw.Close()
		}
	}
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.raw.Close()
	}
}
