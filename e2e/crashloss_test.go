package e2e

import (
	"bytes"
	"fmt"
	"net/mail"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// The crash-loss load (issue 7 item 2).
const (
	crashMessages = 2000
	crashSessions = 8                 // parallel SMTP sessions into Postfix
	crashKills    = 8                 // SIGKILLs of sealgate while mail flows
	crashDrain    = 150 * time.Second // bound on emptying Postfix's queue afterwards
)

// TestCrashLoss: 2,000 messages go into Postfix (after-queue setup, every
// message encrypted by sealgate to Alice's key) while sealgate is killed
// with SIGKILL every 1–2 s and started again. Postfix is then flushed until
// its queue is empty, and every message must have reached the second hop at
// least once; duplicates are counted and reported, not failed.
//
// Messages are counted by their Message-ID, which sealgate keeps in the outer
// header of the encrypted copy (RFC 9788: routing and threading fields stay
// outside), so the whole load is encrypted — the crash hits the real
// encryption path — and counting needs no decryption. A sample is decrypted
// with gpg to show each copy carries its own message.
func TestCrashLoss(t *testing.T) {
	begin := time.Now()
	home := newGPGHome(t)
	gpgKey(t, home, "Alice <alice@ext.test>", "future-default", "default", "never")
	snk := startSink(t, freeAddr(t))
	sgAddr := freeAddr(t)
	pf := startPostfix(t, postfixOpts{mode: afterQueue, sealgate: sgAddr, sink: snk.addr, fastRetry: true})
	sg := newSealgate(t, sgAddr, pf.reinject, "[log]\nlevel = \"warn\"\n")
	sg.importKeys(t, gpgExport(t, home, "alice@ext.test"))
	sg.start(t)

	sendStart := time.Now()
	errc := make(chan error, crashSessions)
	for s := range crashSessions {
		var seqs []int
		for seq := s; seq < crashMessages; seq += crashSessions {
			seqs = append(seqs, seq)
		}
		go func() { errc <- sendSeqs(pf.front, seqs) }()
	}
	for i := range crashKills {
		time.Sleep(time.Second + time.Duration(i%3)*500*time.Millisecond)
		sg.kill(t)
		sg.start(t)
	}
	for range crashSessions {
		if err := <-errc; err != nil {
			t.Fatalf("sending into Postfix: %v", err)
		}
	}
	sendTook := time.Since(sendStart)

	drainStart := time.Now()
	lastFlush := time.Time{}
	for {
		q := pf.queue(t)
		if len(q) == 0 {
			break
		}
		if time.Since(drainStart) > crashDrain {
			t.Fatalf("Postfix still holds %d messages %v after the last one was sent (second hop has %d):\n%.3000s",
				len(q), crashDrain, countDumps(t, snk), pf.queueText(t))
		}
		if time.Since(lastFlush) > 2*time.Second {
			pf.flush(t)
			lastFlush = time.Now()
		}
		time.Sleep(500 * time.Millisecond)
	}
	drainTook := time.Since(drainStart)
	time.Sleep(500 * time.Millisecond) // the last dump file is written before smtp-sink's 250

	first, counts := countCrashLoad(t, snk)
	var missing []string
	for seq := range crashMessages {
		if counts[crashID(seq)] == 0 {
			missing = append(missing, crashID(seq))
		}
	}
	strays := unexpected(counts)
	delivered, dups := len(counts)-len(strays), 0
	for _, n := range counts {
		dups += n - 1
	}
	t.Logf("crash loss: sent %d, delivered %d unique, %d duplicates, %d kills", crashMessages, delivered, dups, sg.kills)
	var cut, afterDot, refused, suspended, reinjectCut int
	for _, line := range strings.Split(pf.maillog(), "\n") {
		switch {
		case strings.Contains(line, "sealgate-reinject/smtpd") && strings.Contains(line, "lost connection after"):
			reinjectCut++ // sealgate died while relaying a copy upstream
		case !strings.Contains(line, "status=deferred"):
		case strings.Contains(line, "delivery temporarily suspended"):
			suspended++ // held back while Postfix considered sealgate down
		case strings.Contains(line, "(lost connection with"):
			cut++
			if strings.Contains(line, "may be sent more than once") {
				afterDot++
			}
		case strings.Contains(line, "(connect to"):
			refused++
		}
	}
	t.Logf("crash loss: sending (while killing) %v, draining %v, whole test %v", sendTook.Round(time.Millisecond),
		drainTook.Round(time.Millisecond), time.Since(begin).Round(time.Second))
	t.Logf("crash loss: Postfix deferrals: %d transactions cut by a kill (%d after the final dot), %d connections refused, %d held while sealgate was down; %d upstream sessions cut",
		cut, afterDot, refused, suspended, reinjectCut)
	if len(missing) > 0 {
		t.Errorf("%d messages lost, e.g. %v", len(missing), missing[:min(10, len(missing))])
	}
	if len(strays) > 0 {
		t.Errorf("the second hop got messages that were never sent: %v", strays[:min(10, len(strays))])
	}
	if sg.kills < 4 {
		t.Errorf("sealgate was killed %d times, want at least 4", sg.kills)
	}

	// A sample, spread over the load, decrypts to its own message.
	for _, seq := range []int{0, crashMessages / 3, crashMessages / 2, 2 * crashMessages / 3, crashMessages - 1} {
		m, ok := first[crashID(seq)]
		if !ok {
			continue
		}
		_, armored := pgpMIME(t, m)
		if plain := gpgDecrypt(t, home, armored); !bytes.Contains(plain, []byte(crashMarker(seq)+"\r\n")) {
			t.Errorf("%s decrypts to a message without %s:\n%.500s", crashID(seq), crashMarker(seq), plain)
		}
	}
}

func crashID(seq int) string     { return fmt.Sprintf("<crash-%04d@corp.test>", seq) }
func crashMarker(seq int) string { return fmt.Sprintf("PLAINMARKER-crash-%04d", seq) }

// crashMessage is message seq of the load: about 1 KiB, its sequence number
// in the Message-ID (outside) and in a body marker (encrypted).
func crashMessage(seq int) []byte {
	body := []string{"Sequence " + fmt.Sprint(seq) + ":", crashMarker(seq), ""}
	for range 12 {
		body = append(body, "The quick brown fox jumps over the lazy dog; privileged and confidential.")
	}
	return message([]string{
		"From: Load <load@corp.test>",
		"To: Alice <alice@ext.test>",
		fmt.Sprintf("Subject: load %d", seq),
		"Date: Tue, 3 Nov 2026 10:00:00 +0000",
		"Message-ID: " + crashID(seq),
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=us-ascii",
	}, body...)
}

// sendSeqs sends the messages seqs over one SMTP session, as a sender that
// retries does: a failed message is sent again on a new session, up to 5
// times. Postfix queues them; sealgate being down does not matter to it.
func sendSeqs(addr string, seqs []int) error {
	var c *smtp.Client
	defer func() {
		if c != nil {
			_ = c.Quit()
		}
	}()
	for _, seq := range seqs {
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			if c == nil {
				if c, err = dialHello(addr); err != nil {
					time.Sleep(200 * time.Millisecond)
					continue
				}
			}
			if err = sendOn(c, seq); err == nil {
				break
			}
			c.Close()
			c = nil
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("message %d: %w", seq, err)
		}
	}
	return nil
}

func dialHello(addr string) (*smtp.Client, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return nil, err
	}
	c.CommandTimeout, c.SubmissionTimeout = time.Minute, time.Minute
	if err := c.Hello("load.e2e.test"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func sendOn(c *smtp.Client, seq int) error {
	if err := c.Mail("load@corp.test", nil); err != nil {
		return err
	}
	if err := c.Rcpt("alice@ext.test", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(crashMessage(seq)); err != nil {
		return err
	}
	return w.Close()
}

// countCrashLoad checks every second-hop message is PGP/MIME without the
// plaintext marker, and counts them by Message-ID; it also returns the first
// copy of each.
func countCrashLoad(t *testing.T, snk *sink) (map[string]upstreamMsg, map[string]int) {
	t.Helper()
	first, counts := map[string]upstreamMsg{}, map[string]int{}
	for _, m := range snk.messages(t) {
		msg, err := mail.ReadMessage(bytes.NewReader(m.data))
		if err != nil {
			t.Fatalf("second hop message: %v\n%.500s", err, m.raw)
		}
		id := msg.Header.Get("Message-Id")
		if !strings.HasPrefix(msg.Header.Get("Content-Type"), "multipart/encrypted") || bytes.Contains(m.raw, []byte("PLAINMARKER-crash")) {
			t.Errorf("%s left unencrypted:\n%.500s", id, m.raw)
		}
		if counts[id]++; counts[id] == 1 {
			first[id] = m
		}
	}
	return first, counts
}

// unexpected lists the counted IDs that the load never sent.
func unexpected(counts map[string]int) []string {
	var out []string
	for id := range counts {
		var seq int
		if _, err := fmt.Sscanf(id, "<crash-%04d@corp.test>", &seq); err != nil || seq < 0 || seq >= crashMessages || crashID(seq) != id {
			out = append(out, id)
		}
	}
	return out
}

func countDumps(t *testing.T, snk *sink) int {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(snk.dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	return len(names)
}

// sealgateServer is `sealgate serve` on an address fixed before it starts,
// so that Postfix can point at it while it is down, and that a test can
// stop, SIGKILL and start again.
type sealgateServer struct {
	listen, config string
	log            *syncBuffer // every run's stderr
	cur            *proc       // nil while not running
	starts, kills  int
}

// newSealgate writes the config (cfg: TOML tables after [smtp] and [http]);
// it does not start the process.
func newSealgate(t testing.TB, listen, upstream, cfg string) *sealgateServer {
	t.Helper()
	dir := t.TempDir()
	s := &sealgateServer{listen: listen, config: filepath.Join(dir, "sealgate.toml"), log: &syncBuffer{}}
	writeFile(t, s.config, fmt.Sprintf("data_dir = %q\n\n[smtp]\nlisten = %q\nupstream = %q\nupstream_tls = \"none\"\nupstream_timeout = \"30s\"\n\n[http]\nlisten = %q\n\n%s\n",
		filepath.Join(dir, "data"), listen, upstream, freeAddr(t), cfg))
	t.Cleanup(func() {
		s.stop(t)
		if strings.Contains(s.log.String(), "panic") {
			t.Errorf("sealgate log mentions a panic:\n%s", s.log)
		}
	})
	return s
}

func (s *sealgateServer) importKeys(t testing.TB, files ...string) {
	t.Helper()
	mustRun(t, cmdOpts{}, sealgateBin, append([]string{"keys", "import", "--config", s.config}, files...)...)
}

// start runs sealgate and waits for its 220 greeting.
func (s *sealgateServer) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(sealgateBin, "serve", "--config", s.config)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sealgate: %v", err)
	}
	p := &proc{cmd: cmd, out: s.log, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	s.cur = p
	s.starts++
	p.waitGreeting(t, s.listen)
}

// kill ends the running sealgate with SIGKILL: no shutdown, no cleanup.
func (s *sealgateServer) kill(t testing.TB) {
	t.Helper()
	if err := s.cur.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL sealgate: %v", err)
	}
	<-s.cur.exited
	s.cur = nil
	s.kills++
}

// stop ends the running sealgate with SIGTERM, as systemd does.
func (s *sealgateServer) stop(t testing.TB) {
	if s.cur == nil {
		return
	}
	_ = s.cur.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.cur.exited:
		if code := s.cur.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("sealgate exited with status %d after SIGTERM", code)
		}
	case <-time.After(15 * time.Second):
		_ = s.cur.cmd.Process.Kill()
		<-s.cur.exited
		t.Errorf("sealgate did not stop within 15 s of SIGTERM")
	}
	s.cur = nil
}
