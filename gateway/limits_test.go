package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// Each limit (reliability.md S6, S7, S8, M1, M3) gets its reply within a
// bounded time, nothing partial reaches upstream, and an ordinary client is
// served meanwhile.

// mustServe sends an ordinary plaintext message and requires 250 in time.
func mustServe(t *testing.T, addr string) {
	t.Helper()
	start := time.Now()
	if r := sendTimed(t, addr, []string{"bob@other.example"}, testMsg); r.code != 250 {
		t.Fatalf("ordinary client not served: %s", r)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("ordinary client served only after %v", d)
	}
}

// alongside runs attack while an ordinary client is served, then checks
// that the attack finished within bound.
func alongside(t *testing.T, addr string, bound time.Duration, attack func()) time.Duration {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	var took time.Duration
	go func() {
		defer wg.Done()
		attack()
		took = time.Since(start)
	}()
	mustServe(t, addr)
	wg.Wait()
	if took > bound {
		t.Errorf("took %v, bound %v", took, bound)
	}
	return took
}

// unstuff undoes SMTP dot-stuffing (RFC 5321 §4.5.2) of recorded DATA.
func unstuff(data []byte) []byte {
	data = bytes.ReplaceAll(data, []byte("\r\n.."), []byte("\r\n."))
	if bytes.HasPrefix(data, []byte("..")) {
		data = data[1:]
	}
	return data
}

// peakHeap runs f and returns how far the live heap rose above where it
// started, sampled every 10 ms.
func peakHeap(f func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
		}
	}()
	f()
	close(stop)
	<-done
	return peak - min(base, peak)
}

func TestLimitMessageSize(t *testing.T) {
	t.Parallel()
	g := startScriptedGateway(t, nil, fault{}, func(o *Options) { o.MaxMessageBytes = 1 << 20 })
	body := strings.Repeat(strings.Repeat("z", 76)+"\r\n", (1<<20)/78+100) // just over 1 MiB
	cases := []struct {
		name string
		run  func(rc *rawClient) string
	}{
		{"DATA over the limit", func(rc *rawClient) string {
			rc.envelope("bob@other.example")
			rc.cmd("DATA", "354")
			rc.write("Subject: big\r\n\r\n" + body + ".\r\n")
			return rc.reply()
		}},
		{"BDAT chunk over the limit", func(rc *rawClient) string {
			rc.envelope("bob@other.example")
			rc.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
			return rc.reply()
		}},
		{"BDAT declaring 4 GiB", func(rc *rawClient) string {
			rc.envelope("bob@other.example")
			rc.write("BDAT 4294967295 LAST\r\n")
			return rc.reply()
		}},
		{"MAIL SIZE= over the limit", func(rc *rawClient) string {
			rc.cmd("EHLO client.test", "250")
			rc.write("MAIL FROM:<sender@firm.example> SIZE=2000000\r\n")
			return rc.reply()
		}},
	}
	for _, c := range cases {
		var got string
		took := alongside(t, g.addr, 5*time.Second, func() { got = c.run(dialRaw(t, g.addr)) })
		t.Logf("limit %s → %q in %v", c.name, got, took.Round(time.Millisecond))
		if !strings.HasPrefix(got, "552 5.3.4") {
			t.Errorf("%s: reply %q, want 552 5.3.4", c.name, got)
		}
	}
	if _, txns := g.up.snapshot(); len(txns) != len(cases) { // only mustServe's messages
		t.Errorf("upstream got %d transactions, want %d (the ordinary ones)", len(txns), len(cases))
	}
	checkSpoolClean(t, g.spoolDir)
}

// TestLimitLongLine: a DATA line over max_line_length. go-smtp's line
// limit is sticky, so the session cannot resynchronise: the client gets a
// non-2xx reply to the message and the connection is closed (500 5.4.0);
// nothing reaches upstream. BDAT has no line limit (RFC 3030 chunks are
// counted, not parsed), so the same line goes through intact.
func TestLimitLongLine(t *testing.T) {
	t.Parallel()
	g := startScriptedGateway(t, nil, fault{}, nil) // max_line_length 8192
	long := strings.Repeat("L", 20000)
	var first, next string
	took := alongside(t, g.addr, 5*time.Second, func() {
		rc := dialRaw(t, g.addr)
		rc.envelope("bob@other.example")
		rc.cmd("DATA", "354")
		rc.write("Subject: long\r\n\r\n" + long + "\r\n.\r\n")
		first = rc.reply()
		// The rest of the message was read to its end: the connection
		// is still in step and carries the next transaction.
		rc.cmd("MAIL FROM:<sender@firm.example>", "250")
		rc.cmd("RCPT TO:<bob@other.example>", "250")
		rc.cmd("DATA", "354")
		rc.write("Subject: short\r\n\r\nshort line\r\n.\r\n")
		next = rc.reply()
	})
	t.Logf("limit DATA line of 20000 bytes → %q, then a short message on the same connection → %q, in %v", first, next, took.Round(time.Millisecond))
	if !strings.HasPrefix(first, "554 5.6.0") {
		t.Errorf("reply %q, want 554 5.6.0", first)
	}
	if !strings.HasPrefix(next, "250") {
		t.Errorf("next message on the same connection: reply %q, want 250", next)
	}
	_, txns := g.up.snapshot()
	for _, tx := range txns {
		if bytes.Contains(tx.data, []byte("LLLL")) {
			t.Error("part of the over-long message reached upstream")
		}
	}
	rc := dialRaw(t, g.addr)
	rc.envelope("bob@other.example")
	msg := "Subject: long\r\n\r\n" + long + "\r\n"
	rc.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg))
	r := rc.reply()
	t.Logf("limit BDAT line of 20000 bytes → %q", r)
	// Upstream marks a transaction accepted just after its 250 has gone
	// out, and groups transactions by connection, not in time order.
	intact := waitFor(2*time.Second, func() bool {
		_, txns := g.up.snapshot()
		for _, tx := range txns {
			if tx.accepted && bytes.Contains(tx.data, []byte(long+"\r\n")) {
				return true
			}
		}
		return false
	})
	if !strings.HasPrefix(r, "250") || !intact {
		t.Errorf("BDAT: reply %q; the line must arrive intact", r)
	}
}

func TestLimitHeader(t *testing.T) {
	t.Parallel()
	fields := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "X-Field-%d: value %d\r\n", i, i)
		}
		return b.String()
	}
	folded := "Subject: start\r\n" + strings.Repeat(" "+strings.Repeat("f", 70)+"\r\n", 2000) // 144 KB in one field
	// To is parsed (net/mail, via go-message) to find Bcc recipients:
	// CVE-2025-61725, CVE-2026-39820 and CVE-2026-42499 were quadratic
	// cases in that parser (domain literals, comments, phrases).
	fold := func(prefix, unit string, n int) string {
		return prefix + strings.Repeat(strings.Repeat(unit, 500)+"\r\n ", n/500) + "<alice@client.example>\r\n"
	}
	for _, c := range []struct {
		name, header string
		maxHeader    int64
		want         string
	}{
		{"header of 144 KB in one folded field", folded, 64 << 10, "552 5.3.4"},
		{"10,000 header fields, limit 64 KiB", fields(10000), 64 << 10, "552 5.3.4"},
		{"10,000 header fields, limit 1 MiB", fields(10000), 1 << 20, "250"},
		{"one field folded 100,000 times, limit 1 MiB", "Subject: s\r\n" + strings.Repeat(" a\r\n", 100000), 1 << 20, "250"},
		{"Cc: 300,000 nested comments", fold("Cc: ", "(", 300000), 1 << 20, "250"},
		{"Cc: phrase of 200,000 words", fold("Cc: ", "w ", 200000), 1 << 20, "250"},
		{"Cc: 200,000 encoded words", fold("Cc: ", "=?utf-8?q?a?= ", 50000), 1 << 20, "250"},
		{"Cc: domain literal of 500,000 bytes", "Cc: x@[" + strings.Repeat(strings.Repeat("1", 500)+"\r\n ", 1000) + "]\r\n", 1 << 20, "250"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			g := startScriptedGateway(t, nil, fault{}, func(o *Options) { o.MaxHeaderBytes = c.maxHeader })
			alice := g.newKey(t, "alice@client.example")
			msg := "From: s@firm.example\r\nTo: alice@client.example\r\n" + c.header + "\r\nbody\r\n"
			var r clientReply
			took := alongside(t, g.addr, 20*time.Second, func() { r = sendTimed(t, g.addr, []string{"alice@client.example"}, msg) })
			t.Logf("limit %s → %s (total %v)", c.name, r, took.Round(time.Millisecond))
			if !strings.HasPrefix(fmt.Sprintf("%d %d.%d.%d", r.code, r.enhanced[0], r.enhanced[1], r.enhanced[2]), c.want) {
				t.Fatalf("reply %s, want %s", r, c.want)
			}
			_, txns := g.up.snapshot()
			var enc []wireTxn
			for _, tx := range txns {
				if strings.Contains(tx.rcpts[0], "alice") {
					enc = append(enc, tx)
				}
			}
			if c.want != "250" {
				if len(enc) != 0 {
					t.Fatal("a message refused for its header reached upstream")
				}
				return
			}
			_, inner, _ := decryptPGPMIME(t, unstuff(enc[0].data), openpgp.EntityList{alice})
			if !bytes.Contains(inner, []byte(c.header)) || !bytes.HasSuffix(inner, []byte("\r\n\r\nbody\r\n")) {
				t.Errorf("the decrypted message lost part of its header or body (%d bytes)", len(inner))
			}
		})
	}
}

// TestLimitMIMEBombs (reliability.md M1): the gateway encrypts the whole
// entity without parsing the body's MIME structure, so deep nesting and
// huge part counts cost time and memory linear in their size, and arrive
// byte for byte.
func TestLimitMIMEBombs(t *testing.T) {
	var deep strings.Builder
	deep.WriteString("Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n")
	for i := range 1000 {
		fmt.Fprintf(&deep, "--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n", i, i+1)
	}
	deep.WriteString("--b1000\r\nContent-Type: text/plain\r\n\r\ninnermost\r\n")
	for i := 1000; i >= 0; i-- {
		fmt.Fprintf(&deep, "--b%d--\r\n", i)
	}
	var wide strings.Builder
	wide.WriteString("Content-Type: multipart/mixed; boundary=\"a\"\r\n\r\n")
	for range 100000 {
		wide.WriteString("--a\r\nX: y\r\n\r\n\r\n")
	}
	wide.WriteString("--a--\r\n")
	for _, c := range []struct{ name, entity string }{
		{"MIME nesting 1,000 deep", deep.String()},
		{"100,000 MIME parts", wide.String()},
	} {
		g := startScriptedGateway(t, nil, fault{}, nil)
		alice := g.newKey(t, "alice@client.example")
		msg := "From: s@firm.example\r\nTo: alice@client.example\r\nSubject: bomb\r\nMIME-Version: 1.0\r\n" + c.entity
		var r clientReply
		var took time.Duration
		grew := peakHeap(func() {
			took = alongside(t, g.addr, 30*time.Second, func() { r = sendTimed(t, g.addr, []string{"alice@client.example"}, msg) })
		})
		t.Logf("limit %s (%d KiB) → %s, heap +%d MiB, total %v", c.name, len(msg)>>10, r, grew>>20, took.Round(time.Millisecond))
		if r.code != 250 {
			t.Fatalf("%s: reply %s, want 250", c.name, r)
		}
		// Generous: a parser that fanned parts out in memory would use
		// hundreds of MiB for the 100,000 parts.
		if grew > 96<<20 {
			t.Errorf("%s: heap grew by %d MiB", c.name, grew>>20)
		}
		_, txns := g.up.snapshot()
		i := slices.IndexFunc(txns, func(tx wireTxn) bool { return strings.Contains(tx.rcpts[0], "alice") })
		if i < 0 {
			t.Fatalf("%s: no encrypted copy upstream", c.name)
		}
		_, inner, _ := decryptPGPMIME(t, unstuff(txns[i].data), openpgp.EntityList{alice})
		if !bytes.HasSuffix(inner, []byte(c.entity[strings.Index(c.entity, "\r\n\r\n"):])) {
			t.Errorf("%s: decrypted body differs", c.name)
		}
	}
}

// TestLimitRecipients (reliability.md S7): one recipient over the limit is
// 452 4.5.3 (the sender retries it later), never a silent drop or a 552;
// the message goes to exactly the accepted ones.
func TestLimitRecipients(t *testing.T) {
	t.Parallel()
	g := startScriptedGateway(t, nil, fault{}, func(o *Options) { o.MaxRecipients = 50 })
	rc := dialRaw(t, g.addr)
	rc.cmd("EHLO client.test", "250")
	rc.cmd("MAIL FROM:<sender@firm.example>", "250")
	for i := range 50 {
		rc.cmd(fmt.Sprintf("RCPT TO:<r%d@other.example>", i), "250")
	}
	r := rc.cmd("RCPT TO:<r50@other.example>", "452")
	t.Logf("limit 51st recipient (max 50) → %q", r)
	if !strings.HasPrefix(r, "452 4.5.3") {
		t.Errorf("51st RCPT %q, want 452 4.5.3", r)
	}
	rc.cmd("DATA", "354")
	rc.write(testMsg + ".\r\n")
	if r := rc.reply(); !strings.HasPrefix(r, "250") {
		t.Fatalf("DATA: %q", r)
	}
	_, txns := g.up.snapshot()
	if len(txns) != 1 || len(txns[0].rcpts) != 50 {
		t.Fatalf("upstream: %d transactions, want 1 with 50 recipients", len(txns))
	}
}

// TestSlowloris (reliability.md S8): a client sending one byte every
// 300 ms, in the command phase and inside DATA, with command_timeout and
// data_timeout of 1 s, is cut off within a bounded time; its message never
// reaches upstream and other clients are served meanwhile. Inside DATA that
// is 421 4.4.2 after one timeout; in the command phase the bound is several
// timeouts (go-smtp runs a line cut by a timeout as a command and keeps the
// connection until its error limit; see TestSlowlorisCommandTimeoutReply in
// bugrepro_test.go).
func TestSlowloris(t *testing.T) {
	t.Parallel()
	for _, phase := range []string{"command", "DATA"} {
		t.Run(phase, func(t *testing.T) {
			t.Parallel()
			g := startScriptedGateway(t, nil, fault{}, func(o *Options) { o.CommandTimeout, o.DataTimeout = time.Second, time.Second })
			var last string
			took := alongside(t, g.addr, 8*time.Second, func() {
				rc := dialRaw(t, g.addr)
				drip := "MAIL FROM:<sender@firm.example>\r\n"
				if phase == "DATA" {
					rc.envelope("bob@other.example")
					rc.cmd("DATA", "354")
					drip = "Subject: slow\r\n\r\n" + strings.Repeat("slow body line\r\n", 10)
				}
				for i := 0; i < len(drip); i++ {
					if _, err := rc.c.Write([]byte{drip[i]}); err != nil {
						break
					}
					time.Sleep(300 * time.Millisecond)
					if i > 30 { // 9 s of dripping: far over any timeout
						break
					}
				}
				for r := rc.reply(); r != ""; r = rc.reply() {
					last = r
				}
			})
			t.Logf("limit slowloris in %s phase (1 byte/300 ms, timeout 1 s) → last reply %q, closed after %v", phase, last, took.Round(time.Millisecond))
			if last == "" || last[0] == '2' {
				t.Errorf("last reply %q, want a 4xx/5xx before the close", last)
			}
			// Inside DATA the timeout ends the session at once.
			if phase == "DATA" && (!strings.HasPrefix(last, "421 4.4.2") || took > 2500*time.Millisecond) {
				t.Errorf("DATA phase: last reply %q after %v, want 421 4.4.2 within about data_timeout", last, took.Round(time.Millisecond))
			}
			if _, txns := g.up.snapshot(); len(txns) != 1 {
				t.Errorf("upstream got %d transactions, want only the ordinary client's", len(txns))
			}
		})
	}
}

// TestDataTimeoutDesync: after DATA times out, whatever the client sends
// next is the rest of its message and must never be read as SMTP commands:
// a body line "MAIL FROM:..." after a stall must not become a transaction
// (RFC 5321 §4.5.3.2; Postfix closes the connection after a timeout too).
func TestDataTimeoutDesync(t *testing.T) {
	t.Parallel()
	g := startScriptedGateway(t, neverRules, fault{}, func(o *Options) { o.DataTimeout = 500 * time.Millisecond })
	rc := dialRaw(t, g.addr)
	rc.envelope("bob@other.example")
	rc.cmd("DATA", "354")
	rc.write("From: s@firm.example\r\nTo: bob@other.example\r\nSubject: stalled\r\n\r\nbody\r\n")
	time.Sleep(1500 * time.Millisecond) // the network stalls
	rc.write("MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@other.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
	time.Sleep(time.Second)
	if _, txns := g.up.snapshot(); len(txns) != 0 {
		t.Fatalf("after a DATA timeout the rest of the body ran as commands: upstream got %d transaction(s), first from %q", len(txns), txns[0].from)
	}
}

// TestIdleConnectionFlood (reliability.md S8): 1,000 connections that say
// nothing against max_connections 50. Exactly 50 are greeted, the rest get
// 421 4.7.0 at once, a real client is refused while the slots are held and
// served as soon as the idle ones time out (421 4.4.2). Refused sockets are
// closed at once, so the test holds about 50 descriptors.
func TestIdleConnectionFlood(t *testing.T) {
	t.Parallel()
	const limit, total, idle = 50, 1000, 3 * time.Second
	g := startScriptedGateway(t, nil, fault{}, func(o *Options) { o.MaxConnections, o.CommandTimeout = limit, idle })
	start := time.Now()
	var held []*rawClient
	for range limit {
		held = append(held, dialRaw(t, g.addr))
	}
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for range total - limit {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			greeting := greet(g.addr)
			mu.Lock()
			counts[greeting]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	burst := time.Since(start)
	t.Logf("limit %d idle connections (max %d) → %d greeted; the rest: %v, in %v", total, limit, len(held), counts, burst.Round(time.Millisecond))
	if burst < idle && counts["421 4.7.0"] != total-limit {
		t.Errorf("over the limit: %v, want %d × 421 4.7.0", counts, total-limit)
	}
	if greet(g.addr) != "421 4.7.0" && time.Since(start) < idle {
		t.Error("a client was admitted while every slot was held")
	}
	for i, rc := range held {
		if r := rc.reply(); !strings.HasPrefix(r, "421 4.4.2") {
			t.Fatalf("idle connection %d: %q, want 421 4.4.2 after command_timeout", i, r)
		}
	}
	if !waitFor(2*time.Second, func() bool { return greet(g.addr) == "220" }) {
		t.Fatal("no slot came free after the idle connections timed out")
	}
	mustServe(t, g.addr)
}

// greet connects, returns the greeting's code and enhanced code ("220" for
// a normal greeting) and hangs up.
func greet(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err.Error()
	}
	if strings.HasPrefix(line, "220") {
		return "220"
	}
	return strings.Join(strings.Fields(line)[:2], " ")
}
