package gateway

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// guardListener turns away, before the SMTP server sees them, clients outside the
// allowed networks (the gateway is never an open relay) and connections
// beyond the limit, each with an SMTP greeting that says so (RFC 5321
// §3.1 allows a 554 greeting; 421 asks the client to come back later).
type guardListener struct {
	net.Listener
	allowed  []netip.Prefix
	slots    chan struct{}
	hostname string
	log      *slog.Logger
}

func newGuardListener(l net.Listener, allowed []netip.Prefix, max int, hostname string, log *slog.Logger) *guardListener {
	return &guardListener{Listener: l, allowed: allowed, slots: make(chan struct{}, max), hostname: hostname, log: log}
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
			return &slotConn{Conn: c, release: func() { <-g.slots }}, nil
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

// slotConn gives its connection slot back once, when closed.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
