package relay

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// wireBody is what DATA must put on the wire for body: every CR LF, bare
// CR and bare LF one CRLF, a dot added to lines that start with one, the
// last line ended, then the end-of-data line. It works on the whole body at
// once, as the reference for the streaming dotWriter.
func wireBody(body []byte) []byte {
	var lines [][]byte
	var cur []byte
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '\r':
			if i+1 < len(body) && body[i+1] == '\n' {
				i++
			}
			lines, cur = append(lines, cur), nil
		case '\n':
			lines, cur = append(lines, cur), nil
		default:
			cur = append(cur, body[i])
		}
	}
	if len(cur) > 0 {
		lines = append(lines, cur)
	}
	var out bytes.Buffer
	for _, l := range lines {
		if len(l) > 0 && l[0] == '.' {
			out.WriteByte('.')
		}
		out.Write(l)
		out.WriteString("\r\n")
	}
	out.WriteString(".\r\n")
	return out.Bytes()
}

// streamBody runs body through a dotWriter in writes of the given sizes
// (cycled), then closes it.
func streamBody(body []byte, sizes []int) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriterSize(&out, 16)
	d := dotWriter{w: bw, bol: true}
	for i := 0; len(body) > 0; i++ {
		n := 1
		if len(sizes) > 0 {
			n = max(sizes[i%len(sizes)], 1)
		}
		n = min(n, len(body))
		if k, err := d.Write(body[:n]); k != n || err != nil {
			panic("dotWriter.Write to a buffer failed")
		}
		body = body[n:]
	}
	d.close()
	_ = bw.Flush()
	return out.Bytes()
}

func TestDotWriter(t *testing.T) {
	for _, body := range []string{
		"",
		"Subject: x\r\n\r\nbody\r\n",
		"no final line end",
		".leading dot\r\n..two\r\nmid.dle\r\n.\r\n",
		"bare\nlf\n.dot after lf\n",
		"bare\rcr\r.dot after cr\r",
		"\r\n.\r\n", "\n.\n", "\r.\r", "\r\n.\r", "\r\r\n.\r\r\n", "\r\n\x00.\r\n",
		strings.Repeat("x", 5000) + "\r\n." + strings.Repeat("y", 3000) + "\r\n",
	} {
		want := wireBody([]byte(body))
		for _, sizes := range [][]int{nil, {1}, {2}, {3, 1}, {7}, {64}, {1 << 20}} {
			if got := streamBody([]byte(body), sizes); !bytes.Equal(got, want) {
				t.Errorf("body %q in writes of %v:\n got %q\nwant %q", body, sizes, got, want)
			}
		}
	}
}

// FuzzDotWriter: whatever the body and however it is cut into writes, the
// wire bytes equal the reference, and so hold no bare CR or LF and end
// only at the final CRLF.CRLF.
func FuzzDotWriter(f *testing.F) {
	f.Add([]byte("a\r\n.b\r\n"), []byte{1, 2})
	f.Add([]byte("\r\n.\r\n\n.\n\r.\r"), []byte{3})
	f.Add([]byte(".\r"), []byte{0})
	f.Fuzz(func(t *testing.T, body, cuts []byte) {
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c)
		}
		got := streamBody(body, sizes)
		if want := wireBody(body); !bytes.Equal(got, want) {
			t.Fatalf("body %q cut %v:\n got %q\nwant %q", body, sizes, got, want)
		}
		if i := bytes.Index(got, []byte("\r\n.\r\n")); i >= 0 && i != len(got)-5 && !(i == 0 && len(got) == 3) {
			t.Fatalf("end of data inside the body at %d: %q", i, got)
		}
	})
}

// TestPipelinedOpen: against an upstream that offers PIPELINING, MAIL,
// every RCPT and DATA leave in one go — the fake upstream answers nothing
// until it has read DATA, so a client waiting for the MAIL reply times out.
func TestPipelinedOpen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		c.Write([]byte("220 up.test ESMTP\r\n"))
		if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "EHLO ") {
			got <- "expected EHLO, got " + l
			return
		}
		c.Write([]byte("250-up.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"))
		var cmds []string
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				got <- strings.Join(cmds, "") + " (then " + err.Error() + ")"
				return
			}
			cmds = append(cmds, l)
			if l == "DATA\r\n" {
				break
			}
		}
		c.Write([]byte("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n"))
		got <- strings.Join(cmds, "")
		body, _ := br.ReadString('\n')
		if body == "hello\r\n" {
			if l, _ := br.ReadString('\n'); l == ".\r\n" {
				c.Write([]byte("250 2.0.0 queued\r\n"))
			}
		}
		_, _ = br.ReadString('\n')
		c.Write([]byte("221 bye\r\n"))
	}()
	r, err := New(Options{Addr: ln.Addr().String(), Hostname: "gw.test", TLS: TLSNone, Timeout: 2 * time.Second, DataTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tx, err := r.Begin(context.Background(), "s@firm.example", false, []string{"a@x.example", "b@x.example"})
	if err != nil {
		t.Fatalf("Begin against a pipelining upstream: %v (upstream read %q)", err, <-got)
	}
	want := "MAIL FROM:<s@firm.example> BODY=8BITMIME\r\nRCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\n"
	if g := <-got; g != want {
		t.Fatalf("upstream read %q, want %q", g, want)
	}
	if _, err := tx.Write([]byte("hello\r\n")); err != nil {
		t.Fatal(err)
	}
	if reply, err := tx.Commit(); err != nil || reply != "2.0.0 queued" {
		t.Fatalf("Commit = %q, %v", reply, err)
	}
}

// TestPoolPrunesAgedConnections: idle connections older than poolMaxAge
// are closed when another connection comes back, not only when popped.
func TestPoolPrunesAgedConnections(t *testing.T) {
	var p pool
	start := time.Now()
	var conns []net.Conn
	for i := range 3 {
		a, b := net.Pipe()
		defer b.Close()
		conns = append(conns, b)
		p.put(&pooled{c: newClient(a)}, start.Add(time.Duration(i)*time.Second), time.Second)
	}
	// Much later, one more comes back: the three aged ones are closed.
	a, b := net.Pipe()
	defer b.Close()
	p.put(&pooled{c: newClient(a)}, start.Add(poolMaxAge+5*time.Second), time.Second)
	if len(p.idle) != 1 {
		t.Fatalf("%d idle connections after pruning, want 1", len(p.idle))
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("aged connection %d: read %v, want EOF (closed)", i, err)
		}
	}
}
