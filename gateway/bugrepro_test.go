//go:build bugrepro

// These tests reproduce bugs the hardening suite found and that are not
// fixed yet. They run with `go test -tags bugrepro ./gateway/`; once a fix
// lands, move the test into the file named in its comment and drop it here.
package gateway

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// TestBDATThenHangUpPanics belongs in fuzz_test.go's seed corpus (found by
// FuzzSession; input "EHLO 00\nMaAL FROM:<>\r\nRCPT TO:<b@e>\r\nBDAT 0").
// A client that sends BDAT and closes the connection at once races
// go-smtp: handleBdat starts the goroutine that calls c.Session().Data(r),
// the main loop reads EOF and Close() sets the session to nil first, and the
// goroutine dereferences nil (conn.go:1059). go-smtp recovers it, but every
// such client writes a panic with its stack to the error log.
func TestBDATThenHangUpPanics(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	g := startScriptedGateway(t, neverRules, fault{}, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	for range 100 {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("EHLO c\r\nMAIL FROM:<s@firm.example>\r\nRCPT TO:<bob@other.example>\r\nBDAT 0"))
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.ReadAll(c)
		c.Close()
	}
	time.Sleep(200 * time.Millisecond)
	if n := strings.Count(logs.String(), "panic serving"); n != 0 {
		t.Fatalf("%d of 100 clients made go-smtp panic", n)
	}
}

// TestBDATResetRacesData belongs in fuzz_test.go's seed corpus (the seed
// "rset-in-bdat"; run with -race). With BDAT, go-smtp runs Session.Data in
// its own goroutine (handleBdat) as soon as the first chunk arrives and
// keeps handling commands on the connection's goroutine. Two races follow a
// RSET after a non-LAST chunk and a new BDAT transaction:
//   - ours (committed session.go): Reset/Mail/Rcpt write s.from, s.rcpts,
//     s.refused, s.txID, s.live while Data and logMessage read them (the
//     working tree's mutex and snapshot fix this);
//   - go-smtp's (conn.go:1072 vs :1045): the old goroutine sends its result
//     to c.dataResult, a field the new transaction has already replaced, so
//     the old error can answer the new message's BDAT LAST (a 4xx for a
//     message that is then relayed: a duplicate on retry) and the new
//     goroutine blocks for ever on the full channel. Upstream fix: capture
//     dataResult (and the session) in locals before starting the goroutine.
func TestBDATResetRacesData(t *testing.T) {
	t.Parallel()
	g := startScriptedGateway(t, neverRules, fault{}, nil)
	for range 20 {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("EHLO c\r\nMAIL FROM:<s@firm.example>\r\nRCPT TO:<bob@other.example>\r\nBDAT 4\r\nabcdRSET\r\n" +
			"MAIL FROM:<a@firm.example>\r\nRCPT TO:<carol@other.example>\r\nBDAT 3 LAST\r\nx\r\nQUIT\r\n"))
		_, _ = io.ReadAll(c)
		c.Close()
	}
}
