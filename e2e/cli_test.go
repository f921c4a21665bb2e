package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sealgate runs the CLI (not serve) and returns its result.
func sealgate(t *testing.T, args ...string) result {
	t.Helper()
	return execute(t, cmdOpts{}, sealgateBin, args...)
}

// TestKeysImportRefusals: keys no gateway may publish are refused with
// exit status 1 and a message naming the problem, and nothing is stored.
func TestKeysImportRefusals(t *testing.T) {
	t.Parallel()
	cfg := writeTemp(t, "sealgate.toml", []byte(fmt.Sprintf("data_dir = %q\n", filepath.Join(t.TempDir(), "data"))))
	gh := newGPGHome(t)
	good := gpgKey(t, gh, "Good <good@a.example>", "future-default", "default", "never")
	expired := gpgKey(t, gh, "Old <old@a.example>", "default", "default", "1d", "--faked-system-time", "20200101T000000")
	signOnly := gpgKey(t, gh, "Signer <signer@a.example>", "ed25519", "sign", "never")
	weak := gpgKey(t, gh, "Weak <weak@a.example>", "rsa1024", "cert", "never")
	gpg(t, gh, nil, "--quick-add-key", weak, "rsa1024", "encr", "never")
	revoked := gpgKey(t, gh, "Rev <rev@a.example>", "future-default", "default", "never")
	rev, err := os.ReadFile(filepath.Join(gh, "openpgp-revocs.d", revoked+".rev"))
	if err != nil {
		t.Fatal(err)
	}
	gpg(t, gh, bytes.ReplaceAll(rev, []byte(":-----BEGIN"), []byte("-----BEGIN")), "--import")

	secretArmored := gpg(t, gh, nil, "--armor", "--export-secret-keys", "good@a.example")
	goodPub := gpg(t, gh, nil, "--armor", "--export", "good@a.example")
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(i*7919 + i/13)
	}
	cases := []struct {
		name string
		data []byte
		want []string // all must appear in stderr (case-insensitive)
	}{
		{"secret armored", secretArmored, []string{"secret key"}},
		{"secret binary", gpg(t, gh, nil, "--export-secret-keys", "good@a.example"), []string{"secret key"}},
		{"secret subkeys", gpg(t, gh, nil, "--export-secret-subkeys", "good@a.example"), []string{"secret key"}},
		{"public then secret", append(append([]byte{}, goodPub...), gpg(t, gh, nil, "--armor", "--export-secret-keys", "old@a.example")...), []string{"secret key"}},
		{"expired", gpg(t, gh, nil, "--armor", "--export", "old@a.example"), []string{expired, "expired"}},
		{"sign-only", gpg(t, gh, nil, "--armor", "--export", "signer@a.example"), []string{signOnly, "encryption"}},
		{"RSA 1024", gpg(t, gh, nil, "--armor", "--export", "weak@a.example"), []string{weak, "1024"}},
		{"revoked", gpg(t, gh, nil, "--armor", "--export", "rev@a.example"), []string{revoked, "revoked"}},
		{"garbage", random, []string{"refused"}},
		{"text", []byte("hello, this is not a key\n"), []string{"refused"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := writeTemp(t, "key", c.data)
			r := sealgate(t, "keys", "import", "--config", cfg, file)
			if r.code != 1 {
				t.Errorf("exit status %d, want 1\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(strings.ToLower(string(r.stderr)), strings.ToLower(w)) {
					t.Errorf("stderr does not mention %q:\n%s", w, r.stderr)
				}
			}
			if l := sealgate(t, "keys", "list", "--config", cfg); l.code != 0 || !strings.Contains(string(l.stdout), "\n0 keys") {
				t.Errorf("keys list after a refused import: exit %d\n%s", l.code, l.stdout)
			}
		})
	}
	// The control: the same directory does take a good public key.
	r := sealgate(t, "keys", "import", "--config", cfg, writeTemp(t, "good.asc", goodPub))
	l := sealgate(t, "keys", "list", "--config", cfg)
	if r.code != 0 || !strings.Contains(string(l.stdout), good) || !strings.Contains(string(l.stdout), "good@a.example") {
		t.Errorf("good key: import exit %d (%s), list:\n%s", r.code, r.stderr, l.stdout)
	}
}

func TestConfigCheck(t *testing.T) {
	t.Parallel()
	bad := writeTemp(t, "bad.toml", []byte("data_dir = \"x\"\nbogus_key = 1\n\n[[policy]]\nmatch = \"*\"\nencrypt = \"sometimes\"\n"))
	r := sealgate(t, "config", "check", "--config", bad)
	if r.code != 1 || !strings.Contains(string(r.stderr), "bogus_key") || !strings.Contains(string(r.stderr), "sometimes") {
		t.Errorf("config check of a file with two mistakes: exit %d, want 1 and both reported\nstderr: %s", r.code, r.stderr)
	}
	example, err := filepath.Abs("../deploy/sealgate.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if r := sealgate(t, "config", "check", "--config", example); r.code != 0 {
		t.Errorf("deploy/sealgate.example.toml does not pass config check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestWKDHash(t *testing.T) {
	t.Parallel()
	const want = "iy9q119eutrkn8s1mk4r39qejnbu3n5q"
	r := sealgate(t, "wkd", "hash", "Joe.Doe@Example.ORG")
	if f := strings.Fields(string(r.stdout)); r.code != 0 || len(f) == 0 || f[0] != want {
		t.Errorf("wkd hash: exit %d, output %q, want first %s", r.code, r.stdout, want)
	}
	// GnuPG's own WKS client agrees.
	out := mustRun(t, cmdOpts{}, "gpg-wks-client", "--print-wkd-hash", "Joe.Doe@Example.ORG")
	if f := strings.Fields(string(out)); len(f) == 0 || f[0] != want {
		t.Errorf("gpg-wks-client --print-wkd-hash: %q", out)
	}
}

// TestServeDefaults: `sealgate serve` without --config uses the built-in
// defaults: SMTP on 127.0.0.1:10025 relaying to 127.0.0.1:10026, HTTP on
// 127.0.0.1:8080, SQLite under ./sealgate-data. Those ports may be taken
// on a shared machine, so the test re-runs itself in a network namespace
// of its own (unshare), where they are guaranteed free.
func TestServeDefaults(t *testing.T) {
	if os.Getenv("SEALGATE_E2E_NETNS") != "1" {
		t.Parallel()
		r := execute(t, cmdOpts{timeout: 90 * time.Second, env: []string{"SEALGATE_E2E_NETNS=1", "SEALGATE_E2E_BIN=" + sealgateBin}},
			"unshare", "--user", "--map-root-user", "--net", os.Args[0], "-test.run=^TestServeDefaults$", "-test.v", "-test.count=1")
		if r.code != 0 || !strings.Contains(string(r.stdout), "--- PASS: TestServeDefaults") {
			t.Fatalf("in a private network namespace (unshare --user --map-root-user --net): exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		return
	}
	mustRun(t, cmdOpts{}, "ip", "link", "set", "lo", "up")
	for _, a := range []string{"127.0.0.1:10025", "127.0.0.1:10026", "127.0.0.1:8080"} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s is not free inside the namespace: %v", a, err)
		}
		l.Close()
	}
	rec := startRecorderOn(t, "127.0.0.1:10026")
	dir := t.TempDir()
	log := &syncBuffer{}
	daemon(t, dir, log, true, sealgateBin, "serve").waitGreeting(t, "127.0.0.1:10025")
	if _, err := os.Stat(filepath.Join(dir, "sealgate-data", "sealgate.db")); err != nil {
		t.Errorf("no ./sealgate-data/sealgate.db: %v", err)
	}
	resp, err := http.Get("http://127.0.0.1:8080/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("HTTP on 127.0.0.1:8080: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	msg := message([]string{"From: s@corp.example", "To: r@c.example", "Subject: defaults"}, "hello")
	if err := sendGo("127.0.0.1:10025", "s@corp.example", []string{"r@c.example"}, msg, nil); err != nil {
		t.Fatalf("send: %v\n%s", err, log)
	}
	if m := rec.messages(); len(m) != 1 || !bytes.Equal(m[0].data, msg) {
		t.Errorf("upstream 127.0.0.1:10026 got %d messages, want the one sent in plaintext (no keys, opportunistic)", len(m))
	}
}
