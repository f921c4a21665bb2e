package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealgate/sealgate/pgp/endpoint"
)

func TestKeygenFilesAndExport(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		profile string
		version int
	}{{"default", 4}, {"rfc9580", 6}, {"pq", 6}} {
		t.Run(tt.profile, func(t *testing.T) {
			t.Parallel()
			h := newHome(t, t.TempDir(), tt.profile+"@example.org", tt.profile)
			for path, mode := range map[string]os.FileMode{h.dir: 0o700 | os.ModeDir,
				filepath.Join(h.dir, secretFile): 0o600, filepath.Join(h.dir, publicFile): 0o600} {
				if fi, err := os.Stat(path); err != nil || fi.Mode() != mode {
					t.Errorf("%s: mode %v, %v; want %v", path, fi.Mode(), err, mode)
				}
			}
			r := mustSealmail(t, nil, "export", "--home", h.dir)
			if r.stdout != string(h.public(t)) {
				t.Errorf("export printed %q", r.stdout)
			}
			keys, err := endpoint.ReadKeys([]byte(r.stdout))
			if err != nil || len(keys) != 1 || endpoint.HasSecret(keys[0]) {
				t.Fatalf("exported public key: %d keys, %v", len(keys), err)
			}
			if v := keys[0].PrimaryKey.Version; v != tt.version || endpoint.Fingerprint(keys[0]) != h.fingerprint {
				t.Errorf("v%d %s, want v%d %s", v, endpoint.Fingerprint(keys[0]), tt.version, h.fingerprint)
			}
			// The key decrypts what the gateway writes to it.
			msg := pgpMIMEMessage(outer, encryptArmored(t, []byte(crlf("Content-Type: text/plain", "", "hi")), h.cert(t)))
			if r := h.decrypt(t, msg); r.code != 0 || !strings.HasSuffix(r.stdout, "\r\n\r\nhi\r\n") {
				t.Errorf("decrypt: exit %d, %q, %q", r.code, r.stdout, r.stderr)
			}
		})
	}
}

func TestKeygenRefusals(t *testing.T) {
	t.Parallel()
	a := alice(t)
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	empty := writeFile(t, dir, "empty", []byte("\n"))
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"existing key", []string{"--email", "x@example.org", "--home", a.dir, "--passphrase-file", a.passFile}, "already holds a key"},
		{"home open to others", []string{"--email", "x@example.org", "--home", open, "--passphrase-file", a.passFile}, "accessible to other users"},
		{"no passphrase, stdin not a terminal", []string{"--email", "x@example.org", "--home", filepath.Join(dir, "h1")},
			"no passphrase: standard input is not a terminal; use --passphrase-file FILE"},
		{"empty passphrase", []string{"--email", "x@example.org", "--home", filepath.Join(dir, "h2"), "--passphrase-file", empty}, "must not be empty"},
		{"no --email", []string{"--home", filepath.Join(dir, "h3")}, "--email is required"},
		{"not an address", []string{"--email", "Alice <x@example.org>", "--home", filepath.Join(dir, "h4"), "--passphrase-file", a.passFile}, "not a plain e-mail address"},
		{"unknown profile", []string{"--email", "x@example.org", "--profile", "rsa", "--home", filepath.Join(dir, "h5"), "--passphrase-file", a.passFile}, "unknown key profile"},
	} {
		r := sealmail(t, nil, append([]string{"keygen"}, tt.args...)...)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1 and %q", tt.name, r.code, r.stdout, r.stderr, tt.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "h2", secretFile)); err == nil {
		t.Error("a refused keygen left a secret key behind")
	}
}

// TestPassphrasePromptsWithoutEcho: keygen asks twice on its terminal
// stdin, decrypt asks on the terminal while stdin is the message; the
// typed passphrase never shows.
func TestPassphrasePromptsWithoutEcho(t *testing.T) {
	t.Parallel()
	const typed = "typed-secret-42"
	p := newPTY(t)
	dir := filepath.Join(t.TempDir(), "home")
	var stdout bytes.Buffer
	e := &env{stdin: p.slave, stdout: &stdout, stderr: p.slave, now: time.Now, getenv: func(string) string { return "" }}
	done := make(chan int)
	go func() {
		done <- exitCode(run([]string{"keygen", "--email", "tty@example.org", "--home", dir}, e), p.slave)
	}()
	p.answer(t, "Passphrase: ", 1, typed)
	p.answer(t, "Repeat the passphrase: ", 1, typed)
	if code := <-done; code != 0 || !strings.HasPrefix(stdout.String(), "fingerprint: ") {
		t.Fatalf("keygen on a terminal: exit %d, stdout %q, terminal %q", code, stdout.String(), p.output())
	}

	h := &home{dir: dir, passFile: writeFile(t, t.TempDir(), "pass", []byte(typed+"\n"))}
	msg := pgpMIMEMessage(outer, encryptArmored(t, []byte(crlf("Content-Type: text/plain", "", "via tty")), h.cert(t)))
	var out bytes.Buffer
	e = &env{stdin: bytes.NewReader(msg), stdout: &out, stderr: p.slave, now: time.Now, getenv: func(string) string { return "" },
		openTTY: func() (*os.File, error) { return os.OpenFile(p.slave.Name(), os.O_RDWR, 0) }}
	go func() { done <- exitCode(run([]string{"decrypt", "--home", dir}, e), p.slave) }()
	p.answer(t, "Passphrase: ", 2, typed)
	if code := <-done; code != 0 || !strings.HasSuffix(out.String(), "via tty\r\n") {
		t.Fatalf("decrypt asking on the terminal: exit %d, stdout %q, terminal %q", code, out.String(), p.output())
	}
	if strings.Contains(p.output(), typed) {
		t.Errorf("the passphrase was echoed: %q", p.output())
	}
}

func TestKeygenPassphrasesDiffer(t *testing.T) {
	t.Parallel()
	p := newPTY(t)
	var stdout bytes.Buffer
	e := &env{stdin: p.slave, stdout: &stdout, stderr: p.slave, now: time.Now, getenv: func(string) string { return "" }}
	done := make(chan int)
	go func() {
		done <- exitCode(run([]string{"keygen", "--email", "tty@example.org", "--home", filepath.Join(t.TempDir(), "h")}, e), p.slave)
	}()
	p.answer(t, "Passphrase: ", 1, "one")
	p.answer(t, "Repeat the passphrase: ", 1, "two")
	if code := <-done; code != 1 || !p.shows("the passphrases differ") {
		t.Errorf("exit %d, terminal %q", code, p.output())
	}
}
