package main

// FuzzDecryptMessage feeds arbitrary messages to decrypt's whole front end
// (MIME parsing, OpenPGP and S/MIME decryption, the grammar and entity
// checks, header assembly). The seed corpus in testdata/fuzz is encrypted
// to the keys in testdata/fuzzkeys; regenerate both with
//
//	SEALMAIL_WRITE_FUZZ_CORPUS=1 go test -run TestWriteFuzzCorpus ./cmd/sealmail
//
// and run the fuzzer with go test -fuzz FuzzDecryptMessage ./cmd/sealmail.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	fuzzKeyDir     = "testdata/fuzzkeys"
	fuzzCorpusDir  = "testdata/fuzz/FuzzDecryptMessage"
	fuzzPassphrase = "fuzz"
)

// fuzzKeyring loads the committed fuzz keys: an OpenPGP key from
// `sealmail keygen` and an S/MIME identity.
func fuzzKeyring(t testing.TB) *keyring {
	t.Helper()
	pass := &passphrase{file: filepath.Join(fuzzKeyDir, "passphrase")}
	keys, err := loadKeyring(fuzzKeyDir, []string{filepath.Join(fuzzKeyDir, "smime.pem")}, pass)
	if err != nil {
		t.Fatalf("fuzz keys (regenerate with SEALMAIL_WRITE_FUZZ_CORPUS=1): %v", err)
	}
	return keys
}

func FuzzDecryptMessage(f *testing.F) {
	keys := fuzzKeyring(f)
	now := func() time.Time { return time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC) }
	f.Add([]byte(outer + crlf("Content-Type: text/plain", "", "not encrypted")))
	f.Add([]byte(outer + crlf(`Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary=x`, "", "--x", "--x--")))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, d, err := decryptMessage(msg, keys, now)
		if err != nil {
			if out != nil || d != nil || !errors.Is(err, errRefused) || err.Error() != errRefused.Error() {
				t.Fatalf("failure returned %q, %v and error %q; want nothing and the generic refusal", out, d, err)
			}
			return
		}
		verdict := signatureField + ": " + string(d.signature)
		if !bytes.HasPrefix(out, []byte(verdict)) {
			t.Fatalf("output does not start with %q: %.100q", verdict, out)
		}
		head, _, _ := bytes.Cut(bytes.ReplaceAll(out, []byte("\r\n"), []byte("\n")), []byte("\n\n"))
		if n := strings.Count(strings.ToLower(string(head)), strings.ToLower(signatureField)+":"); n != 1 {
			t.Fatalf("%d verdict fields in the output header:\n%s", n, head)
		}
	})
}

// TestFuzzCorpusDecrypts keeps the committed seeds meaningful: the ones
// named ok-* decrypt, the refused-* ones are refused.
func TestFuzzCorpusDecrypts(t *testing.T) {
	t.Parallel()
	keys := fuzzKeyring(t)
	names, err := filepath.Glob(filepath.Join(fuzzCorpusDir, "*"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no seed corpus in %s: %v", fuzzCorpusDir, err)
	}
	for _, name := range names {
		msg := readCorpusFile(t, name)
		_, _, err := decryptMessage(msg, keys, time.Now)
		base := filepath.Base(name)
		if strings.HasPrefix(base, "ok-") != (err == nil) {
			t.Errorf("%s: err = %v", base, err)
		}
	}
}

func readCorpusFile(t testing.TB, name string) []byte {
	t.Helper()
	data := string(readFile(t, name))
	body, ok := strings.CutPrefix(data, "go test fuzz v1\n[]byte(")
	if !ok {
		t.Fatalf("%s is not a fuzz corpus file", name)
	}
	var s string
	if _, err := fmt.Sscanf(strings.TrimSuffix(strings.TrimSpace(body), ")"), "%q", &s); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return []byte(s)
}

// TestWriteFuzzCorpus regenerates testdata/fuzzkeys and the seed corpus
// when SEALMAIL_WRITE_FUZZ_CORPUS=1; otherwise it does nothing.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("SEALMAIL_WRITE_FUZZ_CORPUS") != "1" {
		return // a generator, not a check
	}
	for _, dir := range []string{fuzzKeyDir, fuzzCorpusDir} {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(fuzzKeyDir), 0o755); err != nil {
		t.Fatal(err)
	}
	pass := writeFile(t, t.TempDir(), "pass", []byte(fuzzPassphrase+"\n"))
	mustSealmail(t, nil, "keygen", "--email", "alice@example.org", "--home", fuzzKeyDir, "--passphrase-file", pass)
	writeFile(t, fuzzKeyDir, "passphrase", []byte(fuzzPassphrase+"\n"))
	id := newSMIMEIdentity(t, "alice@example.org")
	writeFile(t, fuzzKeyDir, "smime.pem", id.pem)

	h := &home{dir: fuzzKeyDir, passFile: pass}
	cert := h.cert(t)
	entity := []byte(crlf("Content-Type: text/plain; charset=utf-8", "", "fuzz seed"))
	armored := encryptArmored(t, entity, cert)
	sed, _ := sedMessage(t, h, entity)
	nested := crlf(`Content-Type: multipart/mixed; boundary="a"`, "", "--a", `Content-Type: multipart/alternative; boundary="b"`, "",
		"--b", "Content-Type: text/plain", "", "plain", "--b", "Content-Type: text/html", "", "<p>html</p>", "--b--", "--a--")
	good := pgpMIMEMessage(outer, armored)
	_, part, _ := strings.Cut(string(good), "MIME-Version: 1.0\r\n")
	seeds := map[string][]byte{
		"ok-gateway-header-protection": gatewayShaped(t, "Received: by mx\r\n", []string{"From: a@example.net",
			"To: alice@example.org", "Subject: seed", "Content-Type: text/plain"}, "body\r\n", cert),
		"ok-pgpmime":                pgpMIMEMessage(outer, armored),
		"ok-pgpmime-nested-entity":  pgpMIMEMessage(outer, encryptArmored(t, []byte(nested), cert)),
		"ok-inline":                 inlineMessage(outer, armored),
		"ok-mixed-wrapper":          []byte(outer + crlf(`Content-Type: multipart/mixed; boundary="w"`, "", "--w") + part + crlf("", "--w--")),
		"ok-smime":                  smimeMessage(outer, cmsEnvelope(t, id, entity, cmsOptions{})),
		"refused-smime-bad-padding": smimeMessage(outer, cmsEnvelope(t, id, entity, cmsOptions{badPadding: true})),
		"refused-sed":               pgpMIMEMessage(outer, sed),
		"refused-beside-html": []byte(outer + crlf(`Content-Type: multipart/mixed; boundary="m"`, "", "--m", "Content-Type: text/html",
			"", "<img src=\"http://x/", "--m") + part + crlf("", "--m--")),
		"refused-truncated": good[:len(good)/2],
	}
	if err := os.MkdirAll(fuzzCorpusDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, msg := range seeds {
		writeFile(t, fuzzCorpusDir, name, []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", msg)))
	}
}
