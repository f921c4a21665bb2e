package pgp

// Helpers that drive the real OpenPGP implementations our recipients use:
// GnuPG (gpg 2.2), Sequoia (sq 0.27) and RNP (rnp/rnpkeys 0.16, Thunderbird's
// engine). A missing tool fails the test: DESIGN.md lists them as required.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// toolTimeout bounds every external command.
const toolTimeout = 60 * time.Second

// mustRun runs name with args and returns its standard output; it fails
// the test on a non-zero exit, a timeout or a missing tool.
func mustRun(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	return mustRunStdin(t, nil, name, args...)
}

// mustRunStdin is mustRun with stdin as the command's standard input.
func mustRunStdin(t testing.TB, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	out, stderr, err := run(stdin, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr:\n%s", name, strings.Join(args, " "), err, stderr)
	}
	return out
}

// run runs name with a timeout and returns stdout, stderr and the error.
func run(stdin []byte, name string, args ...string) ([]byte, []byte, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, nil, errors.New(name + " is not installed; the interop tests need gpg (gnupg), sq (sq) and rnp/rnpkeys (rnp)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// gpg gets --homedir; make sure it never falls back to ~/.gnupg.
	cmd.Env = append(os.Environ(), "GNUPGHOME=/nonexistent")
	err = cmd.Run()
	if ctx.Err() != nil {
		err = errors.New("timed out after " + toolTimeout.String())
	}
	return stdout.Bytes(), stderr.Bytes(), err
}

// shortTempDir is a private directory with a short path (gpg-agent's socket
// path must stay under 108 bytes), removed after the test.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gpgHome is a throw-away GnuPG home directory.
type gpgHome struct{ dir string }

func newGPG(t testing.TB) *gpgHome {
	t.Helper()
	g := &gpgHome{dir: shortTempDir(t, "sg-gpg")}
	t.Cleanup(func() { run(nil, "gpgconf", "--homedir", g.dir, "--kill", "all") })
	return g
}

// run runs gpg non-interactively in this home with an empty passphrase.
func (g *gpgHome) run(t testing.TB, args ...string) []byte {
	t.Helper()
	base := []string{"--homedir", g.dir, "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""}
	return mustRun(t, "gpg", append(base, args...)...)
}

var keyCreated = regexp.MustCompile(`KEY_CREATED [BP] ([0-9A-F]{40})`)

// genKey runs gpg --quick-gen-key uid algo usage expire (plus extra
// options such as --faked-system-time) and returns the new fingerprint.
func (g *gpgHome) genKey(t testing.TB, uid, algo, usage, expire string, extra ...string) string {
	t.Helper()
	args := append([]string{"--status-fd", "1"}, extra...)
	out := g.run(t, append(args, "--quick-gen-key", uid, algo, usage, expire)...)
	m := keyCreated.FindSubmatch(out)
	if m == nil {
		t.Fatalf("gpg --quick-gen-key printed no KEY_CREATED: %s", out)
	}
	return string(m[1])
}

// export returns the armored public certificate of fpr.
func (g *gpgHome) export(t testing.TB, fpr string) []byte {
	t.Helper()
	return g.run(t, "--armor", "--export", fpr)
}

// decrypt decrypts the armored message and checks gpg's status lines:
// success, integrity (MDC), and AES-256 (DECRYPTION_INFO <mdc> <algo>).
func (g *gpgHome) decrypt(t testing.TB, armored []byte) []byte {
	t.Helper()
	in := writeFile(t, g.dir, "msg.asc", armored)
	out, status := filepath.Join(g.dir, "msg.out"), filepath.Join(g.dir, "msg.status")
	os.Remove(out)
	g.run(t, "--status-file", status, "--output", out, "--decrypt", in)
	st := string(readFile(t, status))
	for _, want := range []string{"DECRYPTION_OKAY", "GOODMDC", "DECRYPTION_INFO 2 9"} {
		if !strings.Contains(st, "[GNUPG:] "+want) {
			t.Errorf("gpg status lacks %q:\n%s", want, st)
		}
	}
	return readFile(t, out)
}

// sqKey is a Sequoia key and certificate in files.
type sqKey struct{ dir, key, cert string }

// newSQ runs sq key generate (suite cv25519, rsa3k or rsa4k) and
// sq key extract-cert.
func newSQ(t testing.TB, email, suite string) sqKey {
	t.Helper()
	dir := shortTempDir(t, "sg-sq")
	k := sqKey{dir: dir, key: filepath.Join(dir, "key.pgp"), cert: filepath.Join(dir, "cert.pgp")}
	mustRun(t, "sq", "key", "generate", "--userid", "<"+email+">", "--cipher-suite", suite, "--export", k.key)
	mustRun(t, "sq", "key", "extract-cert", "--output", k.cert, k.key)
	return k
}

func (k sqKey) decrypt(t testing.TB, armored []byte) []byte {
	t.Helper()
	in := writeFile(t, k.dir, "msg.asc", armored)
	return mustRun(t, "sq", "decrypt", "--recipient-key", k.key, in)
}

// rnpHome is a throw-away RNP home directory holding one key.
type rnpHome struct{ dir, uid string }

// newRNP runs rnpkeys --generate-key. expertChoice "" keeps rnp's default
// (RSA 2048 + RSA 2048); otherwise it is the --expert menu entry, e.g.
// "22" for EdDSA + X25519.
func newRNP(t testing.TB, email, expertChoice string) rnpHome {
	t.Helper()
	h := rnpHome{dir: shortTempDir(t, "sg-rnp"), uid: "RNP <" + email + ">"}
	args := []string{"--homedir", h.dir, "--generate-key", "--userid", h.uid, "--password", ""}
	var stdin []byte
	if expertChoice != "" {
		args = append(args, "--expert")
		stdin = []byte(expertChoice + "\n")
	}
	mustRunStdin(t, stdin, "rnpkeys", args...)
	return h
}

func (h rnpHome) export(t testing.TB) []byte {
	t.Helper()
	return mustRun(t, "rnpkeys", "--homedir", h.dir, "--export-key", h.uid)
}

func (h rnpHome) decrypt(t testing.TB, armored []byte) []byte {
	t.Helper()
	in := writeFile(t, h.dir, "msg.asc", armored)
	out := filepath.Join(h.dir, "msg.out")
	mustRun(t, "rnp", "--homedir", h.dir, "--password", "", "--decrypt", in, "--output", out, "--overwrite")
	return readFile(t, out)
}

// readOne is ReadCerts for input that must hold exactly one certificate,
// which must be usable for encryption now.
func readOne(t testing.TB, input []byte) *Cert {
	t.Helper()
	certs, err := ReadCerts(bytes.NewReader(input), 1<<20)
	if err != nil {
		t.Fatalf("ReadCerts: %v", err)
	}
	if len(certs) != 1 {
		t.Fatalf("ReadCerts: %d certs, want 1", len(certs))
	}
	if err := certs[0].CheckEncryption(time.Now()); err != nil {
		t.Fatalf("CheckEncryption: %v", err)
	}
	return certs[0]
}
