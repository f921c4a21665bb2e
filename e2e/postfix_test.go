package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The two Postfix setups of deploy/postfix/, each a main.cf and a master.cf
// snippet that the tests install unchanged but for ports and paths.
const (
	afterQueue  = "after-queue"
	beforeQueue = "before-queue"
)

// The addresses the snippets ship with (sealgate's defaults); a test
// instance substitutes its own ports for these.
const (
	shippedSealgatePort = "10025"
	shippedReinjectPort = "10026"
)

// postfixOpts describes a private Postfix instance.
type postfixOpts struct {
	mode           string // afterQueue or beforeQueue
	sealgate, sink string // sealgate's SMTP address; the final hop (relayhost)
	fastRetry      bool   // retry deferred mail within seconds (crash-loss load)
}

// postfixInstance is a running private Postfix: its own config_directory and
// queue_directory under /tmp (Postfix's unix sockets need short paths),
// loopback ports only; never the system instance.
type postfixInstance struct {
	dir, conf       string
	front, reinject string // the listener senders use; sealgate's upstream
}

// startPostfix configures an instance with the deploy/postfix snippets of
// o.mode and starts it with `postfix -c DIR start`; cleanup stops it.
func startPostfix(t testing.TB, o postfixOpts) *postfixInstance {
	t.Helper()
	for _, name := range []string{"postfix", "postconf", "postqueue"} {
		tool(t, name)
	}
	if os.Geteuid() != 0 {
		t.Fatal("the Postfix tests must run as root: a private Postfix instance needs root to start (CI runs as root)")
	}
	owner, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("user postfix: %v (install Debian's postfix package)", err)
	}
	if _, err := user.LookupGroup("postdrop"); err != nil {
		t.Fatalf("group postdrop: %v (install Debian's postfix package)", err)
	}
	dir, err := os.MkdirTemp("/tmp", "pf")
	if err != nil {
		t.Fatal(err)
	}
	pf := &postfixInstance{dir: dir, conf: filepath.Join(dir, "conf"), front: freeAddr(t), reinject: freeAddr(t)}
	t.Cleanup(func() { pf.stop(t) })
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(owner.Gid)
	for _, d := range []string{pf.conf, filepath.Join(dir, "queue"), filepath.Join(dir, "data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil { // postfix-owned daemons traverse it
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(dir, "data"), uid, gid); err != nil {
		t.Fatal(err)
	}

	mainCF, masterCF := pf.snippets(t, o)
	writeFile(t, filepath.Join(pf.conf, "main.cf"), pf.baseMainCF(o)+"\n# ---- deploy/postfix/"+o.mode+"/main.cf ----\n"+mainCF)
	writeFile(t, filepath.Join(pf.conf, "master.cf"), stockMasterCF(t))
	// Test-only: Debian's master.cf chroots most services into the queue
	// directory, which a private instance has not populated.
	mustRun(t, cmdOpts{}, "postconf", "-c", pf.conf, "-F", "*/*/chroot = n")
	stock, err := os.ReadFile(filepath.Join(pf.conf, "master.cf"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(pf.conf, "master.cf"), pf.frontListener(mergeMasterCF(string(stock), masterCF)))
	checkPostconf(t, pf.conf)

	if r := execute(t, cmdOpts{}, "postfix", "-c", pf.conf, "start"); r.code != 0 {
		t.Fatalf("postfix -c %s start: exit %d\n%s%s\nmaillog:\n%s", pf.conf, r.code, r.stdout, r.stderr, pf.maillog())
	}
	waitSMTP(t, pf.front)
	waitSMTP(t, pf.reinject)
	return pf
}

// snippets returns the mode's main.cf and master.cf text with sealgate's and
// the reinjection listener's ports replaced by the test's.
func (pf *postfixInstance) snippets(t testing.TB, o postfixOpts) (mainCF, masterCF string) {
	t.Helper()
	_, sgPort, _ := net.SplitHostPort(o.sealgate)
	_, rjPort, _ := net.SplitHostPort(pf.reinject)
	subst := strings.NewReplacer(":"+shippedSealgatePort, ":"+sgPort, ":"+shippedReinjectPort, ":"+rjPort)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "deploy", "postfix", o.mode, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	mainCF, masterCF = read("main.cf"), read("master.cf")
	all := mainCF + masterCF
	if !strings.Contains(all, "127.0.0.1:"+shippedSealgatePort) || !strings.Contains(all, "127.0.0.1:"+shippedReinjectPort) {
		t.Fatalf("deploy/postfix/%s no longer names 127.0.0.1:%s (sealgate) and 127.0.0.1:%s (reinjection)", o.mode, shippedSealgatePort, shippedReinjectPort)
	}
	return subst.Replace(mainCF), subst.Replace(masterCF)
}

// baseMainCF holds what every installation has of its own: directories,
// names, networks and the next hop (here the smtp-sink).
func (pf *postfixInstance) baseMainCF(o postfixOpts) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# test instance %s
compatibility_level = 3.6
queue_directory = %s/queue
data_directory = %s/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.e2e.test
mydomain = e2e.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:%s
smtp_dns_support_level = disabled
maillog_file = %s/maillog
maillog_file_prefixes = %s
`, pf.dir, pf.dir, pf.dir, portOf(o.sink), pf.dir, pf.dir)
	if o.fastRetry {
		b.WriteString("queue_run_delay = 1s\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n")
	}
	return b.String()
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// stockMasterCF is the master.cf Debian's postfix package installs.
func stockMasterCF(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/share/postfix/master.cf.dist", "/etc/postfix/master.cf.proto"} {
		if b, err := os.ReadFile(p); err == nil {
			return string(b)
		}
	}
	t.Fatal("no stock master.cf (/usr/share/postfix/master.cf.dist): install Debian's postfix package")
	return ""
}

// masterKey is an entry's "service type", or "" for a comment, a blank or
// a continuation line.
func masterKey(line string) string {
	if line == "" || line[0] == '#' || line[0] == ' ' || line[0] == '\t' {
		return ""
	}
	if f := strings.Fields(line); len(f) >= 2 {
		return f[0] + " " + f[1]
	}
	return ""
}

// mergeMasterCF does what the snippets tell an admin: drop the stock
// entries that the snippet redefines (same service name and type), then
// add the snippet as it is.
func mergeMasterCF(stock, snippet string) string {
	redefined := map[string]bool{}
	for _, line := range strings.Split(snippet, "\n") {
		if k := masterKey(line); k != "" {
			redefined[k] = true
		}
	}
	var out []string
	skipping := false
	for _, line := range strings.Split(stock, "\n") {
		if k := masterKey(line); k != "" {
			skipping = redefined[k]
		} else if line == "" || line[0] == '#' {
			skipping = false
		}
		if !skipping {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n") + "\n# ---- deploy/postfix snippet ----\n" + snippet
}

// frontListener moves the "smtp inet" entry (port 25) to the test's port.
func (pf *postfixInstance) frontListener(masterCF string) string {
	lines := strings.Split(masterCF, "\n")
	for i, line := range lines {
		if masterKey(line) == "smtp inet" {
			lines[i] = pf.front + strings.TrimPrefix(line, "smtp")
		}
	}
	return strings.Join(lines, "\n")
}

// checkPostconf fails on any warning postconf has about the configuration
// (an unknown or unused parameter, a malformed master.cf entry).
func checkPostconf(t testing.TB, conf string) {
	t.Helper()
	for _, mode := range []string{"-n", "-M", "-P"} {
		r := execute(t, cmdOpts{}, "postconf", "-c", conf, mode)
		if r.code != 0 || len(r.stderr) > 0 {
			t.Fatalf("postconf -c %s %s: exit %d\n%s", conf, mode, r.code, r.stderr)
		}
	}
}

func (pf *postfixInstance) stop(t testing.TB) {
	if t.Failed() {
		t.Logf("Postfix log (%s):\n%s", pf.dir, pf.maillog())
	}
	pidFile := filepath.Join(pf.dir, "queue", "pid", "master.pid")
	if _, err := os.Stat(pidFile); err == nil {
		execute(t, cmdOpts{}, "postfix", "-c", pf.conf, "stop")
		pid := masterPID(pidFile)
		for deadline := time.Now().Add(15 * time.Second); pid > 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if syscall.Kill(pid, 0) != nil {
				pid = 0
			}
		}
		if pid > 0 {
			t.Errorf("Postfix master %d still runs 15 s after postfix stop; aborting it", pid)
			execute(t, cmdOpts{}, "postfix", "-c", pf.conf, "abort")
		}
	}
	_ = os.RemoveAll(pf.dir)
}

func masterPID(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func (pf *postfixInstance) maillog() string {
	b, _ := os.ReadFile(filepath.Join(pf.dir, "maillog"))
	return string(b)
}

// queuedMsg is one line of `postqueue -j`.
type queuedMsg struct {
	Queue      string `json:"queue_name"`
	ID         string `json:"queue_id"`
	Recipients []struct {
		Address string `json:"address"`
		Reason  string `json:"delay_reason"`
	} `json:"recipients"`
}

func (pf *postfixInstance) queue(t testing.TB) []queuedMsg {
	t.Helper()
	var out []queuedMsg
	for _, line := range strings.Split(strings.TrimSpace(string(mustRun(t, cmdOpts{}, "postqueue", "-c", pf.conf, "-j"))), "\n") {
		if line == "" {
			continue
		}
		var m queuedMsg
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("postqueue -j: %v: %q", err, line)
		}
		out = append(out, m)
	}
	return out
}

// queueText is `postqueue -p`: what an admin reads.
func (pf *postfixInstance) queueText(t testing.TB) string {
	t.Helper()
	return string(mustRun(t, cmdOpts{}, "postqueue", "-c", pf.conf, "-p"))
}

func (pf *postfixInstance) flush(t testing.TB) {
	t.Helper()
	mustRun(t, cmdOpts{}, "postqueue", "-c", pf.conf, "-f")
}

// waitEmpty waits until `postqueue -p` reports an empty queue.
func (pf *postfixInstance) waitEmpty(t testing.TB, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if strings.Contains(pf.queueText(t), "Mail queue is empty") {
			return
		}
	}
	t.Fatalf("Postfix queue not empty after %v:\n%s", d, pf.queueText(t))
}

// waitSMTP waits until addr greets with 220.
func waitSMTP(t testing.TB, addr string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		_, _ = c.Write([]byte("QUIT\r\n"))
		c.Close()
		if strings.HasPrefix(line, "220") {
			return
		}
	}
	t.Fatalf("nothing greets with 220 on %s", addr)
}

func writeFile(t testing.TB, name, text string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// postfixPolicy: partner.test requires encryption (nobody there has a key);
// everything else is opportunistic.
const postfixPolicy = "[[policy]]\nmatch = \"partner.test\"\nencrypt = \"required\"\n"

// postfixTestMessage is what the tests send into Postfix.
func postfixTestMessage(id string) []byte {
	return message([]string{
		"From: Sender <sender@corp.test>",
		"To: Alice <alice@ext.test>, bob@partner.test",
		"Subject: privileged " + id,
		"Date: Tue, 3 Nov 2026 10:00:00 +0000",
		"Message-ID: <" + id + "@corp.test>",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=us-ascii",
	}, "Dear Alice,", "", "PLAINMARKER-"+id+" the draft is attached in spirit.", ". a dot line", "-- ", "Sender")
}

// postfixSetup is a sink, a gpg key for alice@ext.test known to sealgate,
// sealgate (not started) and a Postfix instance of mode in front of it.
func postfixSetup(t *testing.T, mode string) (*postfixInstance, *sealgateServer, *sink, string) {
	t.Helper()
	home := newGPGHome(t)
	gpgKey(t, home, "Alice <alice@ext.test>", "future-default", "default", "never")
	snk := startSink(t, freeAddr(t))
	sgAddr := freeAddr(t)
	pf := startPostfix(t, postfixOpts{mode: mode, sealgate: sgAddr, sink: snk.addr})
	sg := newSealgate(t, sgAddr, pf.reinject, postfixPolicy)
	sg.importKeys(t, gpgExport(t, home, "alice@ext.test"))
	return pf, sg, snk, home
}

// checkEncryptedFor checks that m went to alice@ext.test only, carries
// no plaintext, and that gpg decrypts it to orig (RFC 9788 protected).
func checkEncryptedFor(t *testing.T, home string, m upstreamMsg, orig []byte, marker string) {
	t.Helper()
	if len(m.rcpts) != 1 || m.rcpts[0] != "alice@ext.test" || m.from != "sender@corp.test" {
		t.Errorf("second hop envelope from %q to %v, want sender@corp.test to [alice@ext.test]", m.from, m.rcpts)
	}
	if strings.Contains(string(m.raw), marker) {
		t.Errorf("plaintext marker %s reached the second hop:\n%s", marker, m.raw)
	}
	_, armored := pgpMIME(t, m)
	checkProtected(t, orig, gpgDecrypt(t, home, armored))
}

// TestPostfixAfterQueue: swaks -> Postfix -> content_filter -> sealgate ->
// reinjection -> Postfix -> smtp-sink. Alice's copy leaves encrypted and
// decrypts with gpg; the required recipient without a key is bounced by
// Postfix to the sender with sealgate's 550 5.7.1.
func TestPostfixAfterQueue(t *testing.T) {
	t.Parallel()
	pf, sg, snk, home := postfixSetup(t, afterQueue)
	sg.start(t)
	orig := postfixTestMessage("aq1")
	out, code := swaks(t, pf.front, "sender@corp.test", []string{"alice@ext.test", "bob@partner.test"}, orig)
	if r := swaksReplies(out); code != 0 || r["alice@ext.test"] != "250" || r["bob@partner.test"] != "250" || r["DATA"] != "250" {
		t.Fatalf("Postfix should queue for both recipients: swaks exit %d, replies %v\n%s", code, r, out)
	}
	msgs := byRcpts(t, snk.wait(t, 2))
	checkEncryptedFor(t, home, msgs["alice@ext.test"], orig, "PLAINMARKER-aq1")
	ndr, ok := msgs["sender@corp.test"]
	if !ok || ndr.from != "" || !strings.Contains(string(ndr.data), "bob@partner.test") || !strings.Contains(string(ndr.data), "550 5.7.1") {
		t.Errorf("want a bounce from <> to sender@corp.test naming bob@partner.test and 550 5.7.1; got %d transactions:\n%s", len(msgs), ndr.raw)
	}
	pf.waitEmpty(t, 20*time.Second)
	if log := pf.maillog(); !strings.Contains(log, "to=<bob@partner.test>") || !strings.Contains(log, "status=bounced") {
		t.Errorf("Postfix log shows no bounce for bob@partner.test")
	}
}

// TestPostfixDefersWhileSealgateDown: with sealgate stopped Postfix keeps the
// message deferred and nothing reaches the second hop; once sealgate runs,
// `postqueue -f` delivers it, encrypted. Nothing lost.
func TestPostfixDefersWhileSealgateDown(t *testing.T) {
	t.Parallel()
	pf, sg, snk, home := postfixSetup(t, afterQueue)
	orig := postfixTestMessage("down1")
	out, code := swaks(t, pf.front, "sender@corp.test", []string{"alice@ext.test"}, orig)
	if r := swaksReplies(out); code != 0 || r["DATA"] != "250" {
		t.Fatalf("Postfix should queue while sealgate is down: swaks exit %d, replies %v\n%s", code, r, out)
	}
	deferred := false
	for deadline := time.Now().Add(20 * time.Second); !deferred && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		for _, m := range pf.queue(t) {
			deferred = deferred || m.Queue == "deferred" && len(m.Recipients) == 1 && strings.Contains(m.Recipients[0].Reason, "Connection refused")
		}
	}
	listing := pf.queueText(t)
	if !deferred || !strings.Contains(listing, "alice@ext.test") {
		t.Fatalf("want the message deferred (connection to sealgate refused); postqueue -p:\n%s", listing)
	}
	t.Logf("with sealgate down, postqueue -p:\n%s", listing)
	if n := len(snk.messages(t)); n != 0 {
		t.Fatalf("%d messages reached the second hop while sealgate was down", n)
	}
	sg.start(t)
	pf.flush(t)
	msgs := snk.wait(t, 1)
	if len(msgs) != 1 {
		t.Fatalf("second hop got %d messages after the flush, want 1", len(msgs))
	}
	checkEncryptedFor(t, home, msgs[0], orig, "PLAINMARKER-down1")
	pf.waitEmpty(t, 20*time.Second)
}

// TestPostfixBeforeQueue: smtpd_proxy_filter puts sealgate inside Postfix's
// SMTP session. With sealgate down the sender gets a 4xx and nothing is
// queued; with it up, the required recipient without a key is refused at
// RCPT (no bounce), and Alice's copy leaves encrypted and decrypts with gpg.
func TestPostfixBeforeQueue(t *testing.T) {
	t.Parallel()
	pf, sg, snk, home := postfixSetup(t, beforeQueue)
	orig := postfixTestMessage("bq1")
	out, code := swaks(t, pf.front, "sender@corp.test", []string{"alice@ext.test"}, orig)
	failed := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "<** ") && failed == "" {
			failed = strings.TrimSpace(line[4:])
		}
	}
	if code == 0 || !strings.HasPrefix(failed, "4") {
		t.Fatalf("with sealgate down the sender should get a 4xx; swaks exit %d, first error %q\n%s", code, failed, out)
	}
	t.Logf("with sealgate down the sender sees: %s", failed)
	pf.waitEmpty(t, 5*time.Second)

	sg.start(t)
	out, code = swaks(t, pf.front, "sender@corp.test", []string{"alice@ext.test", "bob@partner.test"}, orig)
	r := swaksReplies(out)
	if r["alice@ext.test"] != "250" || !strings.HasPrefix(r["bob@partner.test"], "550") || r["DATA"] != "250" {
		t.Fatalf("want alice 250, bob 550 (at RCPT), DATA 250; swaks exit %d, replies %v\n%s", code, r, out)
	}
	// The second hop also gets Postfix's notice to postmaster about the
	// unreachable proxy filter (notify_classes resource, software).
	msgs := byRcpts(t, snk.wait(t, 2))
	if _, ok := msgs["postmaster@postfix.e2e.test"]; !ok || len(msgs) != 2 {
		t.Errorf("want alice's copy and the postmaster notice, no bounce; got %d transactions", len(msgs))
	}
	checkEncryptedFor(t, home, msgs["alice@ext.test"], orig, "PLAINMARKER-bq1")
	pf.waitEmpty(t, 20*time.Second)
}

// TestPostfixSnippetsAsShipped: both setups' files, unchanged, give a
// configuration postconf reads without a warning, and they point at
// sealgate's shipped listen and upstream addresses.
func TestPostfixSnippetsAsShipped(t *testing.T) {
	t.Parallel()
	example, err := os.ReadFile("../deploy/sealgate.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`listen = "127.0.0.1:` + shippedSealgatePort + `"`, `upstream = "127.0.0.1:` + shippedReinjectPort + `"`} {
		if !strings.Contains(string(example), want) {
			t.Errorf("deploy/sealgate.example.toml lacks %s, which deploy/postfix relies on", want)
		}
	}
	for _, mode := range []string{afterQueue, beforeQueue} {
		dir := t.TempDir()
		read := func(name string) string {
			b, err := os.ReadFile(filepath.Join("..", "deploy", "postfix", mode, name))
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
		writeFile(t, filepath.Join(dir, "main.cf"), "compatibility_level = 3.6\n"+read("main.cf"))
		writeFile(t, filepath.Join(dir, "master.cf"), mergeMasterCF(stockMasterCF(t), read("master.cf")))
		checkPostconf(t, dir)
	}
}
