package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// guardListener turns away, before go-smtp sees them, clients outside the
// allowed networks (the gateway is never an open relay) and connections
// beyond the limit, each with an SMTP greeting that says so (RFC 5321
// §3.1 allows a 554 greeting; 421 asks the client to come back later).
type guardListener struct {
	net.Listener
	allowed  []netip.Prefix
	slots    chan struct{}
	hostname string
	log      *slog.Logger

	mu    sync.Mutex
	conns map[*slotConn]struct{}
}

func newGuardListener(l net.Listener, allowed []netip.Prefix, max int, hostname string, log *slog.Logger) *guardListener {
	return &guardListener{Listener: l, allowed: allowed, slots: make(chan struct{}, max), hostname: hostname, log: log,
		conns: map[*slotConn]struct{}{}}
}

// closeIdle closes every connection that is not inside a transaction.
func (g *guardListener) closeIdle() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		if !c.busy.Load() {
			_ = c.Conn.Close()
		}
	}
}

func (g *guardListener) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if !g.permitted(c.RemoteAddr()) {
			g.log.Warn("connection refused: client not in allowed_networks", "remote", c.RemoteAddr().String())
			go g.refuse(c, fmt.Sprintf("554 5.7.1 %s Access denied\r\n", g.hostname))
			continue
		}
		select {
		case g.slots <- struct{}{}:
			sc := &slotConn{Conn: c, greet: g.hostname}
			sc.release = func() {
				g.mu.Lock()
				delete(g.conns, sc)
				g.mu.Unlock()
				<-g.slots
			}
			g.mu.Lock()
			g.conns[sc] = struct{}{}
			g.mu.Unlock()
			return sc, nil
		default:
			g.log.Warn("connection refused: too many connections", "remote", c.RemoteAddr().String())
			go g.refuse(c, fmt.Sprintf("421 4.7.0 %s Too many connections, try again later\r\n", g.hostname))
		}
	}
}

func (g *guardListener) permitted(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range g.allowed {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (g *guardListener) refuse(c net.Conn, greeting string) {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte(greeting))
	_ = c.Close()
}

// slotConn gives its connection slot back once, when closed. busy is set
// by the session while a transaction is open, so a shutdown can tell idle
// connections from ones to wait for.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
	busy    atomic.Bool
	gone    atomic.Bool // a read ended in EOF or an error: the client is gone
	tls     atomic.Bool // STARTTLS happened: no plaintext replies from here
	greet   string      // the host name for the timeout reply
}

// Read notes when the client is gone, and makes a read timeout final.
// go-smtp does neither: under net/textproto a timeout in the middle of a
// command line comes back as a complete (partial) line and runs as a
// command, and inside a BDAT chunk an early EOF ends the chunk as if it
// were complete (reliability.md S8). Here a timeout answers 421 and
// closes the connection (RFC 5321 §4.5.3.2), and an EOF is remembered so
// a message cut short is never relayed (see session.clientGone).
func (c *slotConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == nil {
		return n, nil
	}
	c.gone.Store(true)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		if !c.tls.Load() {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = fmt.Fprintf(c.Conn, "421 4.4.2 %s Timeout, closing connection\r\n", c.greet)
		}
		_ = c.Conn.Close()
	}
	return n, err
}

// slotOf finds the slotConn under a connection go-smtp may have wrapped in TLS.
func slotOf(c net.Conn) *slotConn {
	isTLS := false
	if tc, ok := c.(*tls.Conn); ok {
		c, isTLS = tc.NetConn(), true
	}
	sc, _ := c.(*slotConn)
	if sc != nil && isTLS {
		sc.tls.Store(true)
	}
	return sc
}

func (c *slotConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
