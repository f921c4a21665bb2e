package main

// Helpers shared by the tests: in-process runs of the CLI, shared homes
// made by `sealmail keygen`, message envelopes, and the real tools.

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealgate/sealgate/pgp"
)

const testPassphrase = "correct horse battery staple"

// sharedDir holds what several tests read (keys from keygen); TestMain
// removes it.
var sharedDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sealmail-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one finished run of the CLI.
type result struct {
	stdout, stderr string
	code           int
}

// sealmail runs the CLI in-process with stdin as its input and no
// terminal, and an empty environment but for extra (KEY=VALUE).
func sealmail(t testing.TB, stdin []byte, args ...string) result {
	t.Helper()
	return sealmailEnv(t, stdin, nil, args...)
}

func sealmailEnv(t testing.TB, stdin []byte, vars map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	e := &env{
		stdin: bytes.NewReader(stdin), stdout: &stdout, stderr: &stderr,
		openTTY: func() (*os.File, error) { return nil, errors.New("no terminal in tests") },
		getenv:  func(k string) string { return vars[k] },
		now:     time.Now,
	}
	code := exitCode(run(args, e), &stderr)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// mustSealmail is sealmail for runs that must succeed.
func mustSealmail(t testing.TB, stdin []byte, args ...string) result {
	t.Helper()
	r := sealmail(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("sealmail %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// home is a sealmail home made by keygen.
type home struct {
	dir, passFile, fingerprint, address string
}

func (h *home) public(t testing.TB) []byte { return readFile(t, filepath.Join(h.dir, publicFile)) }
func (h *home) secret(t testing.TB) []byte { return readFile(t, filepath.Join(h.dir, secretFile)) }
func (h *home) args(more ...string) []string {
	return append([]string{"--home", h.dir, "--passphrase-file", h.passFile}, more...)
}

// decrypt runs sealmail decrypt with h's key and extra arguments.
func (h *home) decrypt(t testing.TB, msg []byte, extra ...string) result {
	t.Helper()
	return sealmail(t, msg, append([]string{"decrypt"}, h.args(extra...)...)...)
}

// cert is h's public key as the gateway reads it.
func (h *home) cert(t testing.TB) *pgp.Cert {
	t.Helper()
	certs, err := pgp.ReadCerts(bytes.NewReader(h.public(t)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

// newHome runs `sealmail keygen` into a fresh directory.
func newHome(t testing.TB, parent, address, profile string) *home {
	t.Helper()
	h := &home{dir: filepath.Join(parent, "home-"+address), passFile: filepath.Join(parent, "pass-"+address), address: address}
	if err := os.WriteFile(h.passFile, []byte(testPassphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := mustSealmail(t, nil, "keygen", "--email", address, "--profile", profile, "--home", h.dir, "--passphrase-file", h.passFile)
	for _, line := range strings.Split(r.stdout, "\n") {
		if f, ok := strings.CutPrefix(line, "fingerprint: "); ok {
			h.fingerprint = f
		}
	}
	if h.fingerprint == "" {
		t.Fatalf("keygen printed no fingerprint: %q", r.stdout)
	}
	return h
}

var sharedHomes sync.Map // address -> *sharedEntry

type sharedEntry struct {
	once sync.Once
	h    *home
}

// sharedHome returns a home for address made once per test binary; tests
// must not change it.
func sharedHome(t testing.TB, address, profile string) *home {
	t.Helper()
	v, _ := sharedHomes.LoadOrStore(address, &sharedEntry{})
	entry := v.(*sharedEntry)
	entry.once.Do(func() { entry.h = newHome(t, sharedDir, address, profile) })
	if entry.h == nil {
		t.Fatalf("making the shared home for %s failed in another test", address)
	}
	return entry.h
}

// alice is the usual recipient: a default-profile key.
func alice(t testing.TB) *home { return sharedHome(t, "alice@example.org", "default") }

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// crlf joins lines with CRLF and ends them with one.
func crlf(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n" }

// outer is the header of the messages the tests build.
var outer = crlf("From: Bob <bob@example.net>", "To: Alice <alice@example.org>", "Subject: ...",
	"Date: Mon, 2 Mar 2026 10:00:00 +0100", "Message-ID: <m1@example.net>", "MIME-Version: 1.0")

// pgpMIMEMessage wraps an armored OpenPGP message in RFC 3156
// multipart/encrypted, as Thunderbird and Enigmail send it.
func pgpMIMEMessage(header string, armored []byte) []byte {
	armored = bytes.ReplaceAll(bytes.ReplaceAll(armored, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
	return []byte(header + crlf(`Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b1"`, "",
		"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)",
		"--b1", "Content-Type: application/pgp-encrypted", "Content-Description: PGP/MIME version identification", "",
		"Version: 1", "",
		"--b1", `Content-Type: application/octet-stream; name="encrypted.asc"`, "Content-Description: OpenPGP encrypted message",
		`Content-Disposition: inline; filename="encrypted.asc"`, "") +
		string(armored) + crlf("", "--b1--"))
}

// inlineMessage puts an armored message as the whole text/plain body.
func inlineMessage(header string, armored []byte) []byte {
	return []byte(header + crlf("Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 7bit", "") + string(armored))
}

// smimeMessage wraps DER EnvelopedData as RFC 8551 application/pkcs7-mime.
func smimeMessage(header string, der []byte) []byte {
	return []byte(header + crlf(`Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"`,
		"Content-Transfer-Encoding: base64", `Content-Disposition: attachment; filename="smime.p7m"`, "") +
		base64Lines(der))
}

// tool runs a real peer with a timeout and returns stdout; a missing tool
// or a failure fails the test (DESIGN.md: never skip).
func tool(t testing.TB, dir string, stdin []byte, env []string, name string, args ...string) []byte {
	t.Helper()
	out, err := toolErr(dir, stdin, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func toolErr(dir string, stdin []byte, env []string, name string, args ...string) ([]byte, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("%s is not installed; the tests need gnupg, gpgsm, sq, rnp and openssl", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir, cmd.Stdin = dir, bytes.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%v\nstderr: %s", err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// gpgHome is a throw-away GnuPG home (short path: the agent's socket
// lives in it) whose agent is stopped at cleanup.
func gpgHome(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sm-gpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = toolErr(dir, nil, nil, "gpgconf", "--homedir", dir, "--kill", "all")
		os.RemoveAll(dir)
	})
	return dir
}

// gpg runs gpg in dir without prompts.
func gpg(t testing.TB, dir string, stdin []byte, args ...string) []byte {
	t.Helper()
	base := []string{"--homedir", dir, "--batch", "--no-tty", "--pinentry-mode", "loopback", "--trust-model", "always"}
	return tool(t, dir, stdin, nil, "gpg", append(base, args...)...)
}

// base64Lines is b in base64, 76 characters a line (RFC 2045 §6.8).
func base64Lines(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > 76 {
		out.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	out.WriteString(s + "\r\n")
	return out.String()
}
