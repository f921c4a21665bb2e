package smime

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Helpers that drive the real tools: OpenSSL 3, GnuPG's gpgsm 2.2 and
// NSS's certutil, pk12util and cmsutil (Debian: openssl, gpgsm,
// libnss3-tools). The tests need them; scripts/test.sh installs them.

// run runs a tool in dir with stdin and returns its stdout; a failure
// stops the test with the tool's stderr.
func run(t testing.TB, dir string, stdin []byte, env []string, name string, args ...string) []byte {
	t.Helper()
	out, err := runErr(t, dir, stdin, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

type toolError struct {
	err    error
	stderr string
}

func (e *toolError) Error() string { return e.err.Error() + ": " + e.stderr }

func runErr(t testing.TB, dir string, stdin []byte, env []string, name string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &toolError{err: err, stderr: stderr.String()}
	}
	return stdout.Bytes(), nil
}

// opensslRecipient is a recipient made the way an admin makes one: key and
// request with `openssl req`, signed by a CA with `openssl x509 -req`.
type opensslRecipient struct {
	dir      string
	certPath string // bob.pem
	keyPath  string // bob.key (PKCS#8, unencrypted)
	caPath   string // ca.pem
	cert     *x509.Certificate
	key      *rsa.PrivateKey
}

const opensslAddress = "bob@example.org"

func newOpenSSLRecipient(t testing.TB, ca *testCA) *opensslRecipient {
	t.Helper()
	dir := t.TempDir()
	r := &opensslRecipient{dir: dir, certPath: filepath.Join(dir, "bob.pem"), keyPath: filepath.Join(dir, "bob.key")}
	r.caPath = writeFile(t, dir, "ca.pem", certPEM(ca.cert))
	writeFile(t, dir, "ca.key", keyPEM(t, ca.key))
	writeFile(t, dir, "ext.cnf", []byte(strings.Join([]string{
		"subjectAltName=email:" + opensslAddress,
		"keyUsage=critical,digitalSignature,keyEncipherment",
		"extendedKeyUsage=emailProtection",
		"basicConstraints=CA:FALSE",
		"subjectKeyIdentifier=hash",
		"authorityKeyIdentifier=keyid",
	}, "\n")+"\n"))
	run(t, dir, nil, nil, "openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes",
		"-keyout", "bob.key", "-out", "bob.csr", "-subj", "/CN=Bob Example/emailAddress="+opensslAddress)
	run(t, dir, nil, nil, "openssl", "x509", "-req", "-in", "bob.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
		"-CAcreateserial", "-days", "30", "-extfile", "ext.cnf", "-out", "bob.pem")
	certs, err := ReadCerts(readFile(t, r.certPath))
	if err != nil {
		t.Fatal(err)
	}
	r.cert = certs[0]
	kp, err := ReadKeyPair(append(readFile(t, r.keyPath), readFile(t, r.certPath)...), "")
	if err != nil {
		t.Fatal(err)
	}
	r.key = kp.Key.(*rsa.PrivateKey)
	return r
}

// p12 exports the recipient as PKCS#12 with password "test"; extra
// arguments choose the algorithms (gpgsm 2.2 reads only the legacy
// PBE-SHA1-3DES ones).
func (r *opensslRecipient) p12(t testing.TB, name string, extra ...string) string {
	t.Helper()
	args := append([]string{"pkcs12", "-export", "-inkey", "bob.key", "-in", "bob.pem", "-certfile", "ca.pem",
		"-name", "Bob", "-out", name, "-passout", "pass:test"}, extra...)
	run(t, r.dir, nil, nil, "openssl", args...)
	return filepath.Join(r.dir, name)
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gpgsmHome is a throw-away GnuPG home with the recipient's key imported
// from a legacy PKCS#12 and the CA trusted; its agent is stopped at
// cleanup.
func gpgsmHome(t testing.TB, r *opensslRecipient) []string {
	t.Helper()
	home, err := os.MkdirTemp("", "gpgsm") // short path: the agent's socket lives here
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"GNUPGHOME=" + home}
	t.Cleanup(func() {
		_, _ = runErr(t, home, nil, env, "gpgconf", "--kill", "all")
		_ = os.RemoveAll(home)
	})
	p12 := r.p12(t, "bob-legacy.p12", "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1")
	run(t, home, []byte("test\n"), env, "gpgsm", "--batch", "--disable-dirmngr", "--pinentry-mode", "loopback", "--passphrase-fd", "0", "--import", p12)
	fpr := run(t, home, nil, nil, "openssl", "x509", "-in", r.caPath, "-noout", "-fingerprint", "-sha1")
	_, f, _ := strings.Cut(strings.TrimSpace(string(fpr)), "=")
	writeFile(t, home, "trustlist.txt", []byte(f+" S relax\n"))
	return env
}

// nssDB is a throw-away NSS database (as Thunderbird keeps) with the
// recipient's PKCS#12 (OpenSSL 3's default AES encryption) imported and
// the CA trusted for S/MIME.
func nssDB(t testing.TB, r *opensslRecipient) string {
	t.Helper()
	dir := t.TempDir()
	db := "sql:" + dir
	run(t, dir, nil, nil, "certutil", "-N", "--empty-password", "-d", db)
	run(t, dir, nil, nil, "pk12util", "-i", r.p12(t, "bob.p12"), "-d", db, "-W", "test", "-K", "")
	run(t, dir, nil, nil, "certutil", "-A", "-n", "Test CA", "-t", "C,C,C", "-d", db, "-i", r.caPath)
	return db
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
