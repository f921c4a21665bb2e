package gateway

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/gateway/relay"
)

// step is a point of an upstream SMTP transaction where a fault can be
// injected (reliability.md G2).
type step string

const (
	atConnect step = "connect"
	atEHLO    step = "EHLO"
	atMail    step = "MAIL"
	atRcpt    step = "RCPT"
	atData    step = "DATA"
	atBody    step = "body"
	atDot     step = "final dot"
)

// fault is what the scripted upstream does at one step. Exactly one of
// code, hang, reset and stall is set; a zero fault injects nothing.
type fault struct {
	at    step
	code  int  // answer with this reply code (421 also closes)
	hang  bool // never answer, keep reading until the gateway gives up
	reset bool // abort the TCP connection (RST)
	stall bool // atBody: stop reading, so the gateway's writes block
	conn  int  // the 1-based connection the fault hits; 0 = every one
}

func (f fault) String() string {
	what := ""
	switch {
	case f.code != 0:
		what = fmt.Sprint(f.code)
	case f.hang:
		what = "hang"
	case f.reset:
		what = "reset"
	case f.stall:
		what = "stop reading"
	}
	if f.conn != 0 {
		return fmt.Sprintf("%s at %s (transaction %d)", what, f.at, f.conn)
	}
	return fmt.Sprintf("%s at %s", what, f.at)
}

// wireTxn is one transaction as the scripted upstream saw it.
type wireTxn struct {
	from     string
	rcpts    []string
	data     []byte // DATA as on the wire (dot-stuffed), without the final dot
	dot      bool   // the final dot arrived
	accepted bool   // and was answered 250
}

// wireConn is everything one upstream connection received.
type wireConn struct {
	raw  bytes.Buffer
	txns []*wireTxn
}

// scriptedUpstream is a raw TCP SMTP server on loopback that records every
// byte it receives and injects one fault. It never parses more than a relay
// needs, so what it records is exactly what the gateway put on the wire.
type scriptedUpstream struct {
	addr  string
	fault fault
	mu    sync.Mutex
	conns []*wireConn
	done  chan struct{}
}

func startScripted(t testing.TB, f fault) *scriptedUpstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &scriptedUpstream{addr: l.Addr().String(), fault: f, done: make(chan struct{})}
	var wg sync.WaitGroup
	done := u.done
	wg.Add(1) // the accept loop; conns are added while it counts
	go func() {
		defer wg.Done()
		for n := 1; ; n++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wc := &wireConn{}
			u.mu.Lock()
			u.conns = append(u.conns, wc)
			u.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				u.serve(c, wc, n)
			}()
			go func() { <-done; c.Close() }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		close(u.done)
		u.mu.Lock()
		u.done = nil
		u.mu.Unlock()
		wg.Wait()
	})
	return u
}

// lockedTee appends what the connection reads to wc.raw under u.mu.
type lockedTee struct {
	u  *scriptedUpstream
	wc *wireConn
}

func (l lockedTee) Write(p []byte) (int, error) {
	l.u.mu.Lock()
	defer l.u.mu.Unlock()
	return l.wc.raw.Write(p)
}

func (u *scriptedUpstream) serve(c net.Conn, wc *wireConn, n int) {
	f := u.fault
	if f.conn != 0 && f.conn != n {
		f = fault{}
	}
	br := bufio.NewReader(io.TeeReader(c, lockedTee{u, wc}))
	// act answers ok at step st unless the fault is there; false ends the
	// connection, and failed reports whether an error reply was sent.
	act := func(st step, ok string) (cont, failed bool) {
		if f.at != st || (!f.hang && !f.reset && f.code == 0) {
			_, err := io.WriteString(c, ok)
			return err == nil, false
		}
		switch {
		case f.hang:
			_, _ = io.Copy(io.Discard, br) // until the gateway hangs up
			return false, true
		case f.reset:
			abort(c)
			return false, true
		}
		fmt.Fprintf(c, "%d %d.0.0 scripted fault\r\n", f.code, f.code/100)
		return f.code != 421, true
	}
	if cont, _ := act(atConnect, "220 up.test ESMTP scripted\r\n"); !cont {
		return
	}
	var cur *wireTxn
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.TrimSpace(line))
		if len(verb) > 4 {
			verb = verb[:4]
		}
		var cont, failed bool
		switch verb {
		case "EHLO", "HELO":
			cont, _ = act(atEHLO, "250-up.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 104857600\r\n")
		case "MAIL":
			cur = &wireTxn{from: line}
			u.mu.Lock()
			wc.txns = append(wc.txns, cur)
			u.mu.Unlock()
			cont, _ = act(atMail, "250 2.1.0 ok\r\n")
		case "RCPT":
			u.mu.Lock()
			cur.rcpts = append(cur.rcpts, strings.TrimSpace(line))
			u.mu.Unlock()
			cont, _ = act(atRcpt, "250 2.1.5 ok\r\n")
		case "DATA":
			if cont, failed = act(atData, "354 go ahead\r\n"); cont && !failed {
				cont = u.readBody(c, br, cur, f)
			}
		case "QUIT":
			io.WriteString(c, "221 2.0.0 bye\r\n")
			return
		case "RSET", "NOOP":
			cont, _ = act("", "250 2.0.0 ok\r\n")
		default:
			cont, _ = act("", "502 5.5.1 not here\r\n")
		}
		if !cont {
			return
		}
	}
}

// readBody reads DATA up to the final dot and answers it.
func (u *scriptedUpstream) readBody(c net.Conn, br *bufio.Reader, cur *wireTxn, f fault) bool {
	for first := true; ; first = false {
		if f.at == atBody && !first {
			if f.stall {
				u.mu.Lock()
				done := u.done
				u.mu.Unlock()
				if done != nil {
					<-done
				}
				return false
			}
			if f.reset {
				abort(c)
				return false
			}
		}
		line, err := br.ReadString('\n')
		if err != nil {
			return false
		}
		if line == ".\r\n" {
			break
		}
		u.mu.Lock()
		cur.data = append(cur.data, line...)
		u.mu.Unlock()
	}
	u.mu.Lock()
	cur.dot = true
	u.mu.Unlock()
	if f.at == atDot && (f.hang || f.reset || f.code != 0) {
		switch {
		case f.hang:
			_, _ = io.Copy(io.Discard, br)
			return false
		case f.reset:
			abort(c)
			return false
		}
		fmt.Fprintf(c, "%d %d.0.0 scripted fault\r\n", f.code, f.code/100)
		return f.code != 421
	}
	if _, err := io.WriteString(c, "250 2.0.0 queued\r\n"); err != nil {
		return false
	}
	u.mu.Lock()
	cur.accepted = true
	u.mu.Unlock()
	return true
}

// abort closes c with a TCP reset instead of a FIN.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// forget drops what was recorded so far (for long fuzzing runs).
func (u *scriptedUpstream) forget() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.conns = nil
}

// snapshot returns copies of what every connection received.
func (u *scriptedUpstream) snapshot() (raw [][]byte, txns []wireTxn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.conns {
		raw = append(raw, append([]byte(nil), c.raw.Bytes()...))
		for _, t := range c.txns {
			cp := *t
			cp.data = append([]byte(nil), t.data...)
			cp.rcpts = append([]string(nil), t.rcpts...)
			txns = append(txns, cp)
		}
	}
	return raw, txns
}

// scriptedGateway is a gateway relaying to a scripted upstream with short
// relay timeouts, so a hang costs well under a second.
type scriptedGateway struct {
	*testGateway
	up       *scriptedUpstream
	spoolDir string
	logs     *syncBuffer
}

// Short enough that hang cases finish quickly, long enough that a loaded
// 2-core CI machine running the suite with -race never hits them by accident.
const (
	relayTimeout     = 1500 * time.Millisecond
	relayDataTimeout = 3 * time.Second
)

func startScriptedGateway(t *testing.T, rules []policy.Rule, f fault, tweak func(*Options)) *scriptedGateway {
	t.Helper()
	return startScriptedGatewayTLS(t, rules, f, relay.TLSNone, tweak)
}

// startScriptedGatewayTLS is startScriptedGateway with the relay's TLS
// mode (the scripted upstream never offers STARTTLS).
func startScriptedGatewayTLS(t *testing.T, rules []policy.Rule, f fault, mode string, tweak func(*Options)) *scriptedGateway {
	t.Helper()
	up := startScripted(t, f)
	sg := &scriptedGateway{up: up, logs: &syncBuffer{}}
	sg.testGateway = startGateway(t, rules, func(o *Options) {
		o.Relay = mustRelayTLS(t, up.addr, mode)
		o.Logger = slog.New(slog.NewTextHandler(sg.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		if tweak != nil {
			tweak(o)
		}
		sg.spoolDir = o.SpoolDir
	})
	t.Cleanup(func() {
		if strings.Contains(sg.logs.String(), "panic") {
			t.Errorf("gateway log mentions a panic:\n%s", sg.logs)
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", sg.logs)
		}
	})
	return sg
}

// mustRelay is a plaintext relay to addr with the short test timeouts.
func mustRelay(t testing.TB, addr string) *relay.Relay {
	t.Helper()
	return mustRelayTLS(t, addr, relay.TLSNone)
}

func mustRelayTLS(t testing.TB, addr, mode string) *relay.Relay {
	t.Helper()
	rel, err := relay.New(relay.Options{Addr: addr, Hostname: "gw.test", TLS: mode,
		Timeout: relayTimeout, DataTimeout: relayDataTimeout})
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// spoolFDs counts this process's open file descriptors that point into dir
// (spool files are unlinked at creation, so only /proc/self/fd sees them).
func spoolFDs(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			n++
		}
	}
	return n
}

// checkSpoolClean fails unless the spool directory is empty and, within a
// second, no descriptor of this process points into it.
func checkSpoolClean(t *testing.T, dir string) {
	t.Helper()
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("spool directory %s holds %d entries (%v)", dir, len(ents), err)
	}
	deadline := time.Now().Add(time.Second)
	for spoolFDs(t, dir) != 0 {
		if time.Now().After(deadline) {
			t.Errorf("%d spool file descriptors still open", spoolFDs(t, dir))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// canary is the marker that must never reach upstream in the clear for a
// recipient whose policy requires encryption (reliability.md G1).
const canary = "CANARY-7f3a9c51-PLAINTEXT"

// canaryMessage carries the canary in the Subject, a text body, a base64
// attachment and a quoted-printable part (spelled so that only QP decoding
// reveals it), and a filler that makes the spool spill to disk.
func canaryMessage(to, bcc string) string {
	attachment := base64.StdEncoding.EncodeToString([]byte("attached: " + canary + " end"))
	qp := "=43ANA=\r\nRY-7f3a9c51-PLAIN=54EXT"
	filler := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("filler--"), 12<<10))
	var b strings.Builder
	fmt.Fprintf(&b, "From: Sender <sender@firm.example>\r\nTo: %s\r\n", to)
	if bcc != "" {
		fmt.Fprintf(&b, "Bcc: %s\r\n", bcc)
	}
	b.WriteString("Subject: " + canary + "\r\nMessage-ID: <canary@firm.example>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nbody " + canary + "\r\n" +
		"--b1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp + "\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + attachment + "\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	for len(filler) > 76 {
		b.WriteString(filler[:76] + "\r\n")
		filler = filler[76:]
	}
	b.WriteString(filler + "\r\n--b1--\r\n")
	return b.String()
}

// leaks reports in which form, if any, marker appears in wire: raw,
// base64 at each of the 3 byte alignments (line breaks ignored), or after
// quoted-printable decoding.
func leaks(wire []byte, marker string) string {
	if bytes.Contains(wire, []byte(marker)) {
		return "raw"
	}
	flat := strings.NewReplacer("\r\n", "", "\n", "").Replace(string(wire))
	for align := 0; align < 3; align++ {
		enc := base64.StdEncoding.EncodeToString(append(make([]byte, align), marker...))
		// Only the characters that depend on marker bytes alone.
		from, to := (align+2)/3*4, (align+len(marker))/3*4
		if strings.Contains(flat, enc[from:to]) {
			return fmt.Sprintf("base64 (alignment %d)", align)
		}
	}
	if bytes.Contains(qpDecode(wire), []byte(marker)) {
		return "quoted-printable"
	}
	return ""
}

// qpDecode decodes quoted-printable leniently: soft breaks go, valid =XX
// escapes become bytes, everything else stays as it is.
func qpDecode(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("=\r\n"), nil)
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '=' && i+2 < len(b) && isHex(b[i+1]) && isHex(b[i+2]) {
			out = append(out, unhex(b[i+1])<<4|unhex(b[i+2]))
			i += 2
			continue
		}
		out = append(out, b[i])
	}
	return out
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
