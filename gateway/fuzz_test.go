package gateway

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/emersion/go-message/textproto"

	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/pgp"
)

// Fuzz targets (STYLE.md rule 12). `go test` runs each seed corpus in
// testdata/fuzz/<Name>/; SECURITY.md gives the command to fuzz longer.

// canonical runs b through the crlfWriter as DATA does.
func canonical(t testing.TB, b []byte) []byte {
	var out bytes.Buffer
	w := newCRLFWriter(&out)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// FuzzCRLFWriter: the output never holds a bare CR or LF, normalising is
// idempotent, where the writes are cut does not matter, and only line ends
// change (every CRLF, bare CR and bare LF of the input is one CRLF).
func FuzzCRLFWriter(f *testing.F) {
	for _, v := range smugglingVariants {
		f.Add([]byte("a"+v+"b"), uint16(1), uint16(3))
	}
	f.Add([]byte("\r\r\n\n\r"), uint16(0), uint16(5))
	f.Fuzz(func(t *testing.T, in []byte, cut1, cut2 uint16) {
		out := canonical(t, in)
		if i := bareAt(out); i >= 0 {
			t.Fatalf("bare line end at %d of %q", i, out)
		}
		if again := canonical(t, out); !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q → %q", out, again)
		}
		a, b := int(cut1)%(len(in)+1), int(cut2)%(len(in)+1)
		a, b = min(a, b), max(a, b)
		var split bytes.Buffer
		w := newCRLFWriter(&split)
		for _, p := range [][]byte{in[:a], in[a:b], in[b:]} {
			if n, err := w.Write(p); n != len(p) || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(split.Bytes(), out) {
			t.Fatalf("cut at %d,%d: %q, whole: %q", a, b, split.Bytes(), out)
		}
		strip := func(b []byte) string { return strings.NewReplacer("\r", "", "\n", "").Replace(string(b)) }
		if strip(in) != strip(out) {
			t.Fatalf("content changed: %q → %q", in, out)
		}
		breaks := bytes.Count(in, []byte("\r")) + bytes.Count(in, []byte("\n")) - bytes.Count(in, []byte("\r\n"))
		if got := bytes.Count(out, []byte("\r\n")); got != breaks {
			t.Fatalf("%d line ends in, %d out", breaks, got)
		}
	})
}

// checkHeaderSection fails unless h is a valid header section: CRLF line
// ends only, ends with the empty line, and reads back completely as a
// header; it returns the fields read back.
func checkHeaderSection(t *testing.T, what string, h []byte) textproto.Header {
	t.Helper()
	if i := bareAt(h); i >= 0 {
		t.Fatalf("%s: bare line end at %d: %q", what, i, h)
	}
	if !bytes.HasSuffix(h, []byte("\r\n")) || !(len(h) == 2 || bytes.HasSuffix(h, []byte("\r\n\r\n"))) {
		t.Fatalf("%s: not ended by an empty line: %q", what, h)
	}
	br := bufio.NewReader(bytes.NewReader(h))
	back, err := textproto.ReadHeader(br)
	if err != nil {
		t.Fatalf("%s: does not read back: %v\n%q", what, err, h)
	}
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Fatalf("%s: %q left after the header section", what, rest)
	}
	if back.Has("Bcc") {
		t.Fatalf("%s: Bcc written", what)
	}
	return back
}

// FuzzHeader: whatever header section a client sends, parseHeader either
// refuses it or the headers the gateway writes (outer, inner, plaintext)
// are valid header sections; the outer one has exactly one Content-Type
// and MIME-Version, and with protection on only the obscured Subject and
// the fields RFC 9788 lets stay outside.
func FuzzHeader(f *testing.F) {
	f.Add([]byte(testMsg), true)
	f.Add([]byte("Content-Type: text/plain\r\n \r\nBcc: x@y\r\nSubject: a\r\n b\r\n"), false)
	f.Add([]byte("Subject: a\r.\rMAIL FROM:<x@y>\n\nbody"), true)
	f.Fuzz(func(t *testing.T, in []byte, protect bool) {
		h, _, err := parseHeader(bytes.NewReader(canonical(t, in)), 64<<10)
		if err != nil {
			return
		}
		var outer, inner, plain bytes.Buffer
		if err := writeOuterHeader(&outer, h, protect, pgp.MIMEContentType("b0undary")); err != nil {
			t.Fatalf("writeOuterHeader: %v", err)
		}
		if err := writeInnerHeader(&inner, h, protect); err != nil {
			t.Fatalf("writeInnerHeader: %v", err)
		}
		if err := writePlainHeader(&plain, h); err != nil {
			t.Fatalf("writePlainHeader: %v", err)
		}
		o := checkHeaderSection(t, "outer", outer.Bytes())
		checkHeaderSection(t, "plain", plain.Bytes())
		in2 := checkHeaderSection(t, "inner", inner.Bytes())
		if n := len(o.Values("Content-Type")); n != 1 || len(o.Values("Mime-Version")) != 1 {
			t.Fatalf("outer: %d Content-Type fields: %q", n, outer.Bytes())
		}
		if ct, _, err := mime.ParseMediaType(o.Get("Content-Type")); err != nil || ct != "multipart/encrypted" {
			t.Fatalf("outer Content-Type %q (%v)", ct, err)
		}
		if !protect {
			return
		}
		if s := o.Values("Subject"); len(s) != 1 || s[0] != obscuredSubject {
			t.Fatalf("outer Subject %q", s)
		}
		for fs := o.Fields(); fs.Next(); {
			if k := fs.Key(); !outerFields[k] && k != "Subject" && k != "Mime-Version" && k != "Content-Type" {
				t.Fatalf("outer carries protected field %q", k)
			}
		}
		if ct := in2.Values("Content-Type"); len(ct) == 0 || !strings.Contains(ct[0], `hp="cipher"`) {
			t.Fatalf("inner Content-Type %q lacks hp=\"cipher\"", ct)
		}
	})
}

// panicWatch keeps the log records of recovered panics: go-smtp's "panic
// serving …" and the session's msg="panic while handling message".
type panicWatch struct {
	mu   sync.Mutex
	seen []string
}

func (p *panicWatch) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("panic serving")) || bytes.Contains(b, []byte(`msg="panic`)) {
		p.mu.Lock()
		p.seen = append(p.seen, string(b))
		p.mu.Unlock()
	}
	return len(b), nil
}

func (p *panicWatch) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.seen
	p.seen = nil
	return s
}

// newFuzzGateway is startGateway for a fuzz target: one gateway for all
// inputs, a key for alice, a required rule, a never rule and the
// opportunistic default, relaying to a scripted upstream.
func newFuzzGateway(f *testing.F) (addr string, up *scriptedUpstream, panics *panicWatch) {
	up = startScripted(f, fault{})
	ctx := context.Background()
	store, err := keydir.OpenSQLite(ctx, f.TempDir()+"/keys.db")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	e, err := openpgp.NewEntity("Alice", "", "alice@client.example", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		f.Fatal(err)
	}
	var pub bytes.Buffer
	if err := e.Serialize(&pub); err != nil {
		f.Fatal(err)
	}
	if res, err := keydir.ImportPGP(ctx, store, pub.Bytes(), time.Now()); err != nil || len(res) != 1 || res[0].Err != nil {
		f.Fatalf("import: %v %+v", err, res)
	}
	pol, err := policy.New([]policy.Rule{{Match: "court.example", Encrypt: policy.Required}, {Match: "news.example", Encrypt: policy.Never}})
	if err != nil {
		f.Fatal(err)
	}
	panics = &panicWatch{}
	srv, err := New(Options{
		Hostname: "gw.test", AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		MaxMessageBytes: 1 << 20, MaxRecipients: 20, MaxLineLength: 2000, MaxHeaderBytes: 16 << 10,
		MaxConnections: 64, CommandTimeout: 2 * time.Second, DataTimeout: 2 * time.Second,
		WriteTimeout: 2 * time.Second, LookupTimeout: time.Second, SpoolDir: f.TempDir(), SpoolMemoryBytes: 8 << 10,
		ProtectHeaders: true, Policy: pol, Directory: store, Relay: mustRelay(f, up.addr),
		Logger: slog.New(slog.NewTextHandler(panics, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		f.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go srv.Serve(l)
	f.Cleanup(func() { srv.Close() })
	return l.Addr().String(), up, panics
}

var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9][ -]`)

// FuzzSession feeds the input to the gateway as a client's whole byte
// stream, then half-closes. The session must end on its own (no hang),
// every line the gateway writes must be an SMTP reply, no panic may be
// logged, and nothing it relays may carry a bare CR or LF.
func FuzzSession(f *testing.F) {
	f.Add([]byte("EHLO c\r\nMAIL FROM:<s@firm.example>\r\nRCPT TO:<alice@client.example>\r\nRCPT TO:<bob@other.example>\r\nDATA\r\nSubject: x\r\n\r\nhi\n.\nMAIL FROM:<e@vil>\r\n.\r\nQUIT\r\n"))
	f.Add([]byte("EHLO c\r\nMAIL FROM:<s@firm.example>\r\nRCPT TO:<j@court.example>\r\nBDAT 10 LAST\r\nSubject: x"))
	addr, up, panics := newFuzzGateway(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		go func() {
			_, _ = c.Write(in)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		out, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("session still open 15 s after the client stopped sending; replies: %q", out)
		}
		for _, line := range strings.SplitAfter(string(out), "\r\n") {
			if line != "" && (!replyLine.MatchString(line) || !strings.HasSuffix(line, "\r\n")) {
				t.Fatalf("not an SMTP reply line: %q", line)
			}
		}
		if p := panics.take(); len(p) != 0 {
			t.Fatalf("panic logged (by this input or one just before it):\n%s", strings.Join(p, "\n"))
		}
		raw, _ := up.snapshot()
		up.forget()
		for _, b := range raw {
			if i := bareAt(b); i >= 0 {
				t.Fatalf("bare line end relayed at byte %d: %q", i, b[max(0, i-30):min(len(b), i+30)])
			}
		}
	})
}
