// Command smtpload is the SMTP load generator of the sealgate benchmark
// (bench/run.sh). It sends messages of a given size over N concurrent
// sessions and records, for every message, the time from the DATA command
// to the final 250 reply, then prints one JSON object: messages/s, MB/s
// and latency percentiles.
//
// It speaks plain SMTP without pipelining, like Postfix's smtp-source: by
// default one connection per message (smtp-source without -d), or one per
// session with -reuse. Every recipient is named in the To: header, so a
// gateway sends one copy to all of them (an envelope recipient missing from
// To/Cc would be a Bcc and get a copy of its own). The body is prepared
// once per run: 76-column lines of base64 text (what an attachment looks
// like, and nothing an encryptor can compress much).
//
//	smtpload -addr 127.0.0.1:10025 -c 20 -d 5s -size 4096 -to a@x.example,b@x.example
//	smtpload ... -rate 500 -d 3s   # open loop: 500 messages/s, for latency at a given load
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sealgate/sealgate/internal/gctune"
)

type result struct {
	Addr      string  `json:"addr"`
	Sessions  int     `json:"sessions"`
	Size      int     `json:"size"` // bytes per message as sent, before dot-stuffing
	Rate      float64 `json:"rate,omitempty"`
	Sent      int     `json:"sent"` // answered 250 after DATA
	Failed    int     `json:"failed"`
	ElapsedS  float64 `json:"elapsed_s"`
	MsgsPerS  float64 `json:"msgs_per_s"`
	MBPerS    float64 `json:"mb_per_s"` // 10^6 bytes of input messages per second
	P50MS     float64 `json:"p50_ms"`   // DATA command to final 250
	P90MS     float64 `json:"p90_ms"`
	P99MS     float64 `json:"p99_ms"`
	MaxMS     float64 `json:"max_ms"`
	FirstErr  string  `json:"first_error,omitempty"`
	TimedOut  bool    `json:"timed_out,omitempty"`
	Behind    int     `json:"behind,omitempty"` // open loop: sends that started over 10 ms late
	Recipient int     `json:"recipients"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:10025", "SMTP server host:port")
	sessions := flag.Int("c", 20, "concurrent SMTP sessions")
	maxMsgs := flag.Int("n", 0, "stop after this many messages (0: only -d bounds the run)")
	minMsgs := flag.Int("min", 0, "keep sending past -d until this many messages are done (bounded by -timeout)")
	dur := flag.Duration("d", 5*time.Second, "start no new message after this long")
	rate := flag.Float64("rate", 0, "open loop: start this many messages per second (0: closed loop, as fast as the sessions go)")
	size := flag.Int("size", 4096, "message size in bytes (header and body)")
	from := flag.String("from", "sender@bench.example", "envelope sender")
	to := flag.String("to", "rcpt@bench.example", "recipients, comma-separated (all named in To:)")
	reuse := flag.Bool("reuse", false, "send every message of a session over one connection (default: one connection per message)")
	timeout := flag.Duration("timeout", 5*time.Minute, "hard bound on the whole run; also each network read/write")
	flag.Parse()
	// The loader shares the CPUs with what it measures: keep its garbage
	// collector from running every few MiB, as sealgate serve does.
	defer gctune.Floor(32 << 20)()
	rcpts := strings.Split(*to, ",")
	if *sessions < 1 || *size < 512 || len(rcpts) == 0 || (*maxMsgs == 0 && *dur <= 0) {
		fmt.Fprintln(os.Stderr, "smtpload: need -c >= 1, -size >= 512, -to, and -n or -d")
		os.Exit(2)
	}
	l := &loader{addr: *addr, from: *from, rcpts: rcpts, reuse: *reuse, ioTimeout: *timeout}
	l.body = makeBody(*size - len(l.header(0)))
	res := l.run(*sessions, *maxMsgs, *minMsgs, *dur, *rate, *timeout)
	res.Size, res.Recipient = len(l.header(0))+len(l.body)-len(".\r\n"), len(rcpts)
	res.MBPerS = res.MsgsPerS * float64(res.Size) / 1e6
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if res.Sent == 0 {
		os.Exit(1)
	}
}

type loader struct {
	addr, from string
	rcpts      []string
	reuse      bool
	ioTimeout  time.Duration
	body       []byte // dot-stuffing-free body lines and the final ".\r\n"
	seq        atomic.Int64
}

// header is the message header; only the Message-ID changes, and its
// length does not (fixed-width counter), so every message has one size.
func (l *loader) header(n int64) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: <%s>\r\nTo: ", l.from)
	for i, r := range l.rcpts {
		if i > 0 {
			b.WriteString(",\r\n ")
		}
		fmt.Fprintf(&b, "<%s>", r)
	}
	fmt.Fprintf(&b, "\r\nSubject: sealgate benchmark\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <%012d.%d@smtpload.invalid>\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", n, os.Getpid())
	return []byte(b.String())
}

// makeBody returns n bytes of 76-column base64 lines (CRLF) followed by
// the end-of-data line. Base64 has no '.', so nothing needs stuffing.
func makeBody(n int) []byte {
	if n < 2 {
		n = 2
	}
	rng := rand.NewChaCha8([32]byte{'s', 'e', 'a', 'l'})
	raw := make([]byte, 57)
	b := make([]byte, 0, n+80)
	for len(b) < n {
		_, _ = rng.Read(raw)
		line := base64.StdEncoding.AppendEncode(nil, raw)
		if rest := n - len(b) - 2; rest < len(line) {
			line = line[:max(rest, 0)]
		}
		b = append(append(b, line...), '\r', '\n')
	}
	return append(b, ".\r\n"...) // len(b) == n, ending in CRLF
}

func (l *loader) run(sessions, maxMsgs, minMsgs int, dur time.Duration, rate float64, hard time.Duration) result {
	res := result{Addr: l.addr, Sessions: sessions, Rate: rate}
	start := time.Now()
	stop := start.Add(dur)
	deadline := start.Add(hard)
	var (
		mu       sync.Mutex
		lat      []time.Duration
		failed   int
		firstErr string
		issued   atomic.Int64
		done     atomic.Int64
		behind   atomic.Int64
	)
	// take reserves the next message; false when the run is over.
	take := func() bool {
		now := time.Now()
		if now.After(deadline) {
			return false
		}
		if now.After(stop) && (minMsgs == 0 || done.Load() >= int64(minMsgs)) {
			return false
		}
		n := issued.Add(1)
		if maxMsgs > 0 && n > int64(maxMsgs) {
			return false
		}
		return true
	}
	// Open loop: a ticker hands out start times; a session that is busy
	// when its turn comes starts late (counted in "behind").
	var ticks chan time.Time
	if rate > 0 {
		ticks = make(chan time.Time, 1<<16)
		go func() {
			defer close(ticks)
			interval := time.Duration(float64(time.Second) / rate)
			for i := 0; ; i++ {
				at := start.Add(time.Duration(i) * interval)
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				}
				if !take() {
					return
				}
				ticks <- at
			}
		}()
	}
	var wg sync.WaitGroup
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *conn
			defer func() {
				if c != nil {
					c.quit()
				}
			}()
			for {
				if ticks != nil {
					at, ok := <-ticks
					if !ok {
						return
					}
					if time.Since(at) > 10*time.Millisecond {
						behind.Add(1)
					}
				} else if !take() {
					return
				}
				if c == nil {
					var err error
					if c, err = l.dial(deadline); err != nil {
						mu.Lock()
						failed++
						if firstErr == "" {
							firstErr = err.Error()
						}
						mu.Unlock()
						time.Sleep(10 * time.Millisecond)
						continue
					}
				}
				d, err := c.send(l, l.seq.Add(1))
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == "" {
						firstErr = err.Error()
					}
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
				done.Add(1)
				if err != nil || !l.reuse {
					if err == nil {
						c.quit()
					} else {
						c.nc.Close()
					}
					c = nil
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.TimedOut = time.Now().After(deadline)
	res.ElapsedS = elapsed.Seconds()
	res.Sent, res.Failed, res.FirstErr, res.Behind = len(lat), failed, firstErr, int(behind.Load())
	res.MsgsPerS = float64(len(lat)) / elapsed.Seconds()
	if len(lat) > 0 {
		slices.Sort(lat)
		pct := func(p float64) float64 {
			i := int(p*float64(len(lat))+0.5) - 1
			return float64(lat[min(max(i, 0), len(lat)-1)]) / 1e6
		}
		res.P50MS, res.P90MS, res.P99MS, res.MaxMS = pct(0.50), pct(0.90), pct(0.99), float64(lat[len(lat)-1])/1e6
	}
	return res
}

type conn struct {
	nc      net.Conn
	r       *bufio.Reader
	timeout time.Duration
}

func (l *loader) dial(deadline time.Time) (*conn, error) {
	nc, err := net.DialTimeout("tcp", l.addr, time.Until(deadline))
	if err != nil {
		return nil, err
	}
	c := &conn{nc: nc, r: bufio.NewReaderSize(nc, 4096), timeout: l.ioTimeout}
	if err := c.expect(220); err != nil {
		nc.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if err := c.cmd(250, "EHLO smtpload.invalid\r\n"); err != nil {
		nc.Close()
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	return c, nil
}

// send runs one transaction and returns the time from writing DATA to
// reading the reply to the final dot.
func (c *conn) send(l *loader, n int64) (time.Duration, error) {
	if err := c.cmd(250, "MAIL FROM:<"+l.from+">\r\n"); err != nil {
		return 0, fmt.Errorf("MAIL: %w", err)
	}
	for _, r := range l.rcpts {
		if err := c.cmd(250, "RCPT TO:<"+r+">\r\n"); err != nil {
			return 0, fmt.Errorf("RCPT %s: %w", r, err)
		}
	}
	t0 := time.Now()
	if err := c.cmd(354, "DATA\r\n"); err != nil {
		return 0, fmt.Errorf("DATA: %w", err)
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	bufs := net.Buffers{l.header(n), l.body}
	if _, err := bufs.WriteTo(c.nc); err != nil {
		return 0, fmt.Errorf("message: %w", err)
	}
	if err := c.expect(250); err != nil {
		return 0, fmt.Errorf("end of data: %w", err)
	}
	return time.Since(t0), nil
}

func (c *conn) quit() {
	_ = c.cmd(221, "QUIT\r\n")
	c.nc.Close()
}

func (c *conn) cmd(code int, line string) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	if _, err := io.WriteString(c.nc, line); err != nil {
		return err
	}
	return c.expect(code)
}

// expect reads a (multi-line) reply and requires the given code.
func (c *conn) expect(code int) error {
	_ = c.nc.SetReadDeadline(time.Now().Add(c.timeout))
	want := fmt.Sprint(code)
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return err
		}
		if len(line) < 4 {
			return errors.New("short reply: " + strings.TrimSpace(line))
		}
		if line[3] == '-' {
			continue
		}
		if line[:3] != want {
			return errors.New(strings.TrimSpace(line))
		}
		return nil
	}
}
