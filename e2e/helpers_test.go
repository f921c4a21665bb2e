// Package e2e is sealgate's black-box end-to-end suite: it builds the
// sealgate binary, runs it as a process and talks to it only through SMTP,
// its CLI and real peers (GnuPG, Sequoia, RNP, swaks, Postfix's smtp-sink).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// sealgateBin is the binary under test, built once by TestMain.
var sealgateBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if bin := os.Getenv("SEALGATE_E2E_BIN"); bin != "" { // re-executed child (see TestServeDefaults)
		sealgateBin = bin
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "sealgate-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	sealgateBin = filepath.Join(dir, "sealgate")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", sealgateBin, "./cmd/sealgate")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/sealgate: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// tool returns the path of a real peer, failing (never skipping) when it is
// not installed.
func tool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/lib/gnupg"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	t.Fatalf("%s is not installed: the e2e suite needs it (Debian packages gnupg, sq, rnp, swaks, postfix); install it instead of skipping", name)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// result is what a finished external command left.
type result struct {
	stdout, stderr []byte
	code           int
}

// cmdOpts configures execute; zero values mean no stdin, the test's
// working directory and a 60 s timeout.
type cmdOpts struct {
	stdin   []byte
	dir     string
	env     []string
	timeout time.Duration
}

// execute runs name (resolved with tool) to completion under a context
// timeout and returns its output and exit status.
func execute(t testing.TB, o cmdOpts, name string, args ...string) result {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 60 * time.Second
	}
	path := name
	if !strings.Contains(name, "/") {
		path = tool(t, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Dir = &stdout, &stderr, o.dir
	if o.stdin != nil {
		cmd.Stdin = bytes.NewReader(o.stdin)
	}
	if o.env != nil {
		cmd.Env = append(os.Environ(), o.env...)
	}
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out after %v\nstderr: %s", name, strings.Join(args, " "), o.timeout, stderr.Bytes())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("%s: %v", name, err)
	}
	return result{stdout: stdout.Bytes(), stderr: stderr.Bytes(), code: cmd.ProcessState.ExitCode()}
}

// mustRun is execute for commands that must succeed; it returns stdout.
func mustRun(t testing.TB, o cmdOpts, name string, args ...string) []byte {
	t.Helper()
	r := execute(t, o, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit status %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer collects a process's output while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a long-running process started by daemon.
type proc struct {
	cmd    *exec.Cmd
	out    fmt.Stringer
	exited chan struct{} // closed once it has exited
}

// daemon starts a long-running process bounded by a context; at cleanup it
// gets SIGTERM and must exit 0 within 15 s (checkExit) or is killed.
func daemon(t testing.TB, dir string, out *syncBuffer, checkExit bool, path string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	p := &proc{cmd: exec.CommandContext(ctx, path, args...), out: out, exited: make(chan struct{})}
	p.cmd.Dir, p.cmd.Stdout, p.cmd.Stderr = dir, out, out
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", path, err)
	}
	var err error
	go func() { err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		defer cancel()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			if checkExit && err != nil {
				t.Errorf("%s exited abnormally after SIGTERM: %v\n%s", filepath.Base(path), err, out)
			}
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			t.Errorf("%s did not stop within 15 s of SIGTERM", filepath.Base(path))
		}
	})
	return p
}

// waitGreeting waits until addr answers with a 220 greeting.
func (p *proc) waitGreeting(t testing.TB, addr string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-p.exited:
			t.Fatalf("%s exited before answering on %s\noutput:\n%s", p.cmd.Path, addr, p.out)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			_, _ = io.WriteString(c, "QUIT\r\n")
			c.Close()
			if strings.HasPrefix(line, "220") {
				return
			}
		}
	}
	t.Fatalf("%s never answered 220 on %s\noutput:\n%s", p.cmd.Path, addr, p.out)
}

// gateway is a running `sealgate serve`.
type gateway struct {
	smtpAddr, httpAddr, config, dataDir string
	proc                                *proc
	log                                 *syncBuffer // stderr: the slog log
	sink                                *sink       // set by startGateway
}

// startGateway runs sealgate with a fresh smtp-sink as upstream. cfg is
// TOML appended after the generated [smtp] and [http] tables (policy, pgp,
// log tables).
func startGateway(t testing.TB, cfg string) *gateway {
	t.Helper()
	s := startSink(t, freeAddr(t))
	g := startGatewayTo(t, s.addr, cfg)
	g.sink = s
	return g
}

// startGatewayTo runs sealgate relaying to upstream, which may be down.
func startGatewayTo(t testing.TB, upstream, cfg string) *gateway {
	t.Helper()
	dir := t.TempDir()
	g := &gateway{smtpAddr: freeAddr(t), httpAddr: freeAddr(t), dataDir: filepath.Join(dir, "data"),
		config: filepath.Join(dir, "sealgate.toml"), log: &syncBuffer{}}
	text := fmt.Sprintf("data_dir = %q\n\n[smtp]\nlisten = %q\nupstream = %q\nupstream_tls = \"none\"\nupstream_timeout = \"30s\"\n\n[http]\nlisten = %q\n\n%s\n",
		g.dataDir, g.smtpAddr, upstream, g.httpAddr, cfg)
	if err := os.WriteFile(g.config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // runs after daemon's cleanup has stopped the process
		if strings.Contains(g.log.String(), "panic") {
			t.Errorf("sealgate log mentions a panic:\n%s", g.log)
		}
	})
	g.proc = daemon(t, dir, g.log, true, sealgateBin, "serve", "--config", g.config)
	g.proc.waitGreeting(t, g.smtpAddr)
	return g
}

// importKeys runs `sealgate keys import` and requires success.
func (g *gateway) importKeys(t testing.TB, files ...string) {
	t.Helper()
	mustRun(t, cmdOpts{}, sealgateBin, append([]string{"keys", "import", "--config", g.config}, files...)...)
}

// waitLog reports whether the log shows s within 5 s: the log reaches the
// test through a pipe, a little after the SMTP reply the line precedes.
func (g *gateway) waitLog(s string) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(g.log.String(), s) {
			return true
		}
	}
	return false
}

// upstreamMsg is one transaction as the upstream server received it.
type upstreamMsg struct {
	from     string
	rcpts    []string
	mailArgs string // the MAIL FROM parameters as sent
	data     []byte // the message; CRLF line ends
	raw      []byte // everything captured, for "appears nowhere" checks
}

// sink is Postfix's smtp-sink dumping every transaction to a file.
type sink struct {
	addr, dir string
	log       *syncBuffer
}

// startSink runs `smtp-sink -d DIR/%Y%m%d%H%M%S. ADDR 64` (dropping to
// nobody when root, which smtp-sink requires). The dump directory lives
// directly under the system temp dir so that nobody can write to it.
func startSink(t testing.TB, addr string) *sink {
	t.Helper()
	dir, err := os.MkdirTemp("", "sealgate-sink-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	s := &sink{addr: addr, dir: dir, log: &syncBuffer{}}
	args := []string{"-d", dir + "/%Y%m%d%H%M%S.", addr, "64"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	daemon(t, "", s.log, false, tool(t, "smtp-sink"), args...).waitGreeting(t, addr)
	return s
}

// messages parses every dump file. smtp-sink writes LF line ends, keeps
// the envelope in X-Mail-Args/X-Rcpt-Args lines, ends its own header with
// a three-line Received field and adds an empty line after the message.
func (s *sink) messages(t testing.TB) []upstreamMsg {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(s.dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	var out []upstreamMsg
	for _, n := range names {
		raw, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		m := upstreamMsg{raw: raw}
		rest, inReceived := string(raw), false
		for {
			line, tail, ok := strings.Cut(rest, "\n")
			if !ok {
				t.Fatalf("dump %s: no message after the smtp-sink header:\n%s", n, raw)
			}
			if inReceived && !strings.HasPrefix(line, "\t") {
				break // rest starts with the message
			}
			rest = tail
			switch {
			case strings.HasPrefix(line, "X-Mail-Args: "):
				m.mailArgs = strings.TrimPrefix(line, "X-Mail-Args: ")
				m.from = strings.Trim(strings.Fields(m.mailArgs + " <>")[0], "<>")
			case strings.HasPrefix(line, "X-Rcpt-Args: "):
				m.rcpts = append(m.rcpts, strings.Trim(strings.Fields(strings.TrimPrefix(line, "X-Rcpt-Args: "))[0], "<>"))
			case strings.HasPrefix(line, "Received: "):
				inReceived = true
			}
		}
		msg := strings.TrimSuffix(rest, "\n") // the empty line smtp-sink appends
		m.data = []byte(strings.ReplaceAll(msg, "\n", "\r\n"))
		out = append(out, m)
	}
	return out
}

// wait returns the dumps once there are at least n, after a pause long
// enough for a stray extra transaction to show up too.
func (s *sink) wait(t testing.TB, n int) []upstreamMsg {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if names, _ := filepath.Glob(filepath.Join(s.dir, "*")); len(names) >= n {
			time.Sleep(300 * time.Millisecond)
			return s.messages(t)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("smtp-sink received fewer than %d messages in 20 s; got %d\nsink log:\n%s", n, len(s.messages(t)), s.log)
	return nil
}

// recorder is a go-smtp server that records each transaction's envelope
// and DATA bytes exactly (dot-unstuffed, line ends untouched). It stands in
// for smtp-sink only where smtp-sink cannot serve: SMTPUTF8 (not offered)
// and byte-exact line ends (its dump rewrites them).
type recorder struct {
	addr string
	mu   sync.Mutex
	msgs []upstreamMsg
}

func startRecorder(t testing.TB) *recorder {
	t.Helper()
	return startRecorderOn(t, "127.0.0.1:0")
}

func startRecorderOn(t testing.TB, addr string) *recorder {
	t.Helper()
	r := &recorder{}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r.addr = l.Addr().String()
	srv := smtp.NewServer(r)
	srv.Domain, srv.EnableSMTPUTF8, srv.AllowInsecureAuth = "recorder.test", true, true
	srv.ReadTimeout, srv.WriteTimeout, srv.MaxMessageBytes = time.Minute, time.Minute, 64<<20
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *recorder) NewSession(*smtp.Conn) (smtp.Session, error) { return &recSession{r: r}, nil }

func (r *recorder) messages() []upstreamMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]upstreamMsg(nil), r.msgs...)
}

type recSession struct {
	r   *recorder
	cur upstreamMsg
}

func (s *recSession) Reset()        { s.cur = upstreamMsg{} }
func (s *recSession) Logout() error { return nil }
func (s *recSession) Mail(from string, o *smtp.MailOptions) error {
	s.cur = upstreamMsg{from: from, mailArgs: "<" + from + ">"}
	if o != nil && o.UTF8 {
		s.cur.mailArgs += " SMTPUTF8"
	}
	return nil
}
func (s *recSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.rcpts = append(s.cur.rcpts, to)
	return nil
}
func (s *recSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.data, s.cur.raw = b, b
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	s.r.msgs = append(s.r.msgs, s.cur)
	return nil
}

// swaks sends msg (CRLF text ending in CRLF) with swaks --data @file. The
// file ends with a lone dot line, which swaks takes as the end of data
// instead of adding a CRLF of its own, so the bytes sent are exactly msg.
func swaks(t testing.TB, server, from string, to []string, msg []byte, extra ...string) (string, int) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(file, append(append([]byte{}, msg...), ".\r\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--server", server, "--helo", "e2e.test",
		"--from", from, "--to", strings.Join(to, ","), "--data", "@" + file, "--timeout", "60"}, extra...)
	r := execute(t, cmdOpts{timeout: 90 * time.Second}, "swaks", args...)
	return string(r.stdout) + string(r.stderr), r.code
}

// swaksReplies maps each RCPT address, and "DATA" for the final dot, to
// the reply code swaks printed for it ("<-  250 ..." or "<** 550 ...").
func swaksReplies(out string) map[string]string {
	replies := map[string]string{}
	pending := ""
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.HasPrefix(line, " -> RCPT TO:<"):
			pending = strings.TrimSuffix(strings.TrimPrefix(line, " -> RCPT TO:<"), ">")
		case line == " -> .":
			pending = "DATA"
		case pending != "" && (strings.HasPrefix(line, "<-  ") || strings.HasPrefix(line, "<** ")):
			replies[pending] = strings.Fields(line[4:] + " ?")[0]
			pending = ""
		}
	}
	return replies
}

// sendGo sends with go-smtp's client; the error is the first failed
// command's (an *smtp.SMTPError for a reply).
func sendGo(addr, from string, rcpts []string, msg []byte, opts *smtp.MailOptions) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = time.Minute, 2*time.Minute
	if err := c.Hello("e2e.test"); err != nil {
		return err
	}
	if err := c.Mail(from, opts); err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// pgpMIME checks that m is RFC 3156 PGP/MIME and returns its outer header
// and the armored OpenPGP message of its second part.
func pgpMIME(t testing.TB, m upstreamMsg) (mail.Header, []byte) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(m.data))
	if err != nil {
		t.Fatalf("upstream message: %v", err)
	}
	parts := mimeParts(t, msg, "multipart/encrypted")
	if len(parts) != 2 {
		t.Fatalf("multipart/encrypted has %d parts, want 2", len(parts))
	}
	if !strings.HasPrefix(parts[0].ctype, "application/pgp-encrypted") || !strings.Contains(string(parts[0].body), "Version: 1") {
		t.Errorf("first part is %q %q, want application/pgp-encrypted with Version: 1", parts[0].ctype, parts[0].body)
	}
	if !strings.HasPrefix(parts[1].ctype, "application/octet-stream") || !bytes.HasPrefix(bytes.TrimSpace(parts[1].body), []byte("-----BEGIN PGP MESSAGE-----")) {
		t.Fatalf("second part is %q, want an armored OpenPGP message in application/octet-stream:\n%.300s", parts[1].ctype, parts[1].body)
	}
	return msg.Header, parts[1].body
}

// splitEntity cuts a MIME entity (CRLF) into its header and body.
func splitEntity(t testing.TB, b []byte) (header, body []byte) {
	t.Helper()
	i := bytes.Index(b, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatalf("no end of header in %.300q", b)
	}
	return b[:i+2], b[i+4:]
}

// headerFields splits a raw header into fields, continuation lines included.
func headerFields(h []byte) []string {
	var out []string
	for _, line := range strings.SplitAfter(string(h), "\r\n") {
		if line == "" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(out) > 0 {
			out[len(out)-1] += line
			continue
		}
		out = append(out, line)
	}
	return out
}

type mimePart struct {
	ctype string
	body  []byte
}

// mimeParts checks msg's media type and returns its parts.
func mimeParts(t testing.TB, msg *mail.Message, want string) []mimePart {
	t.Helper()
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != want {
		t.Fatalf("Content-Type %q (%v), want %s", msg.Header.Get("Content-Type"), err, want)
	}
	if want == "multipart/encrypted" && params["protocol"] != "application/pgp-encrypted" {
		t.Errorf("protocol=%q, want application/pgp-encrypted", params["protocol"])
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var parts []mimePart
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return parts
		}
		if err != nil {
			t.Fatalf("%s: %v", want, err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("%s part: %v", want, err)
		}
		parts = append(parts, mimePart{ctype: p.Header.Get("Content-Type"), body: b})
	}
}

// newGPGHome makes a GnuPG home under the system temp dir (agent socket
// paths must stay short) and stops its agent at cleanup.
func newGPGHome(t testing.TB) string {
	t.Helper()
	home, err := os.MkdirTemp("", "e2e-gpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		execute(t, cmdOpts{timeout: 10 * time.Second}, "gpgconf", "--homedir", home, "--kill", "gpg-agent")
		os.RemoveAll(home)
	})
	return home
}

// gpg runs gpg in home without prompts and returns stdout.
func gpg(t testing.TB, home string, stdin []byte, args ...string) []byte {
	t.Helper()
	base := []string{"--homedir", home, "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""}
	return mustRun(t, cmdOpts{stdin: stdin}, "gpg", append(base, args...)...)
}

// gpgKey generates a key (gpg --quick-gen-key UID ALGO USAGE EXPIRE, plus
// extra options before it) and returns its fingerprint.
func gpgKey(t testing.TB, home, uid, algo, usage, expire string, extra ...string) string {
	t.Helper()
	gpg(t, home, nil, append(extra, "--quick-gen-key", uid, algo, usage, expire)...)
	return gpgFields(t, home, uid, "fpr", 9)[0]
}

// gpgFields returns field i of every colon-listing record of kind rec
// ("fpr", "sub", ...) for the keys matching who.
func gpgFields(t testing.TB, home, who, rec string, i int) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(string(gpg(t, home, nil, "--with-colons", "--list-keys", who)), "\n") {
		if f := strings.Split(line, ":"); f[0] == rec && len(f) > i {
			out = append(out, f[i])
		}
	}
	if len(out) == 0 {
		t.Fatalf("gpg lists no %s record for %s", rec, who)
	}
	return out
}

// gpgExport writes the armored public key of who to a file.
func gpgExport(t testing.TB, home, who string) string {
	t.Helper()
	return writeTemp(t, "pub.asc", gpg(t, home, nil, "--armor", "--export", who))
}

func gpgDecrypt(t testing.TB, home string, armored []byte) []byte {
	t.Helper()
	return gpg(t, home, armored, "--decrypt")
}

// sqKey generates a Sequoia key; it returns the key and certificate files.
func sqKey(t testing.TB, uid string) (key, cert string) {
	t.Helper()
	dir := t.TempDir()
	key, cert = filepath.Join(dir, "key.pgp"), filepath.Join(dir, "cert.pgp")
	mustRun(t, cmdOpts{}, "sq", "key", "generate", "--userid", uid, "--export", key)
	mustRun(t, cmdOpts{}, "sq", "key", "extract-cert", "--output", cert, key)
	return key, cert
}

func sqDecrypt(t testing.TB, key string, armored []byte) []byte {
	t.Helper()
	return mustRun(t, cmdOpts{stdin: armored}, "sq", "decrypt", "--recipient-key", key)
}

// sqRecipients lists the key IDs of the PKESK packets (sq packet dump).
func sqRecipients(t testing.TB, armored []byte) []string {
	t.Helper()
	var ids []string
	for _, line := range strings.Split(string(mustRun(t, cmdOpts{stdin: armored}, "sq", "packet", "dump")), "\n") {
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "Recipient: "); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// rnpKey generates an RNP key in a new home; it returns the home and the
// exported certificate.
func rnpKey(t testing.TB, uid, addr string) (home, cert string) {
	t.Helper()
	home = t.TempDir()
	cert = filepath.Join(t.TempDir(), "cert.asc")
	mustRun(t, cmdOpts{}, "rnpkeys", "--homedir", home, "--generate-key", "--userid", uid, "--password=", "--notty")
	mustRun(t, cmdOpts{}, "rnpkeys", "--homedir", home, "--export-key", addr, "--output", cert, "--overwrite")
	return home, cert
}

func rnpDecrypt(t testing.TB, home string, armored []byte) []byte {
	t.Helper()
	return mustRun(t, cmdOpts{stdin: armored}, "rnp", "--homedir", home, "--password=", "--notty", "--decrypt", "--output", "-")
}

func writeTemp(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkProtected compares a decrypted entity with the original message
// (RFC 9788 header protection): the body byte for byte, every original
// header field but Bcc present (Content-Type extended by hp="cipher"), HP-Outer
// recording the obscured Subject.
func checkProtected(t testing.TB, orig, decrypted []byte) {
	t.Helper()
	oh, ob := splitEntity(t, orig)
	dh, db := splitEntity(t, decrypted)
	if !bytes.Equal(db, ob) {
		i := 0
		for i < len(db) && i < len(ob) && db[i] == ob[i] {
			i++
		}
		t.Errorf("decrypted body differs from the original at byte %d (lengths %d, %d): got %.80q, want %.80q",
			i, len(db), len(ob), db[min(i, len(db)):], ob[min(i, len(ob)):])
	}
	fields := headerFields(dh)
	for _, f := range headerFields(oh) {
		name := strings.ToLower(f[:strings.IndexByte(f, ':')])
		if name == "bcc" {
			continue // never copied: each Bcc recipient gets a copy of its own
		}
		if name != "content-type" {
			if !bytes.Contains(dh, []byte(f)) {
				t.Errorf("decrypted header lacks the original field %q\ndecrypted header:\n%s", f, dh)
			}
			continue
		}
		want, wantParams, _ := mime.ParseMediaType(strings.TrimSpace(f[len("content-type:"):]))
		found := false
		for _, g := range fields {
			if strings.HasPrefix(strings.ToLower(g), "content-type:") {
				found = true
				mt, params, err := mime.ParseMediaType(strings.TrimSpace(g[len("content-type:"):]))
				if err != nil || mt != want || params["hp"] != "cipher" {
					t.Errorf("inner Content-Type %q: want %s with hp=\"cipher\" (%v)", g, want, err)
				}
				for k, v := range wantParams {
					if params[k] != v {
						t.Errorf("inner Content-Type %q lost parameter %s=%q", g, k, v)
					}
				}
			}
		}
		if !found {
			t.Errorf("decrypted header has no Content-Type:\n%s", dh)
		}
	}
	if !bytes.Contains(dh, []byte("HP-Outer: Subject: ...\r\n")) {
		t.Errorf("decrypted header lacks \"HP-Outer: Subject: ...\":\n%s", dh)
	}
}
