package main

// Keys from `sealmail keygen` (default profile) with the real peers, both
// ways: gpg 2.2, sq 0.27 and rnp 0.16 encrypt (and sign) to the sealmail
// key and sealmail decrypts; the exported secret key decrypts in each of
// them what the gateway encrypts to it.

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// peerEncrypt is how one peer encrypts stdin to the key in pub, signing
// with its own key when sign is set; it returns the armored message and
// the signer's public key file ("" when unsigned).
type peerEncrypt func(t *testing.T, pub string, entity []byte, sign bool) (armored []byte, signerPub string)

func gpgEncrypt(t *testing.T, pub string, entity []byte, sign bool) ([]byte, string) {
	g := gpgHome(t)
	gpg(t, g, nil, "--import", pub)
	args := []string{"--armor", "--recipient", "alice@example.org"}
	signerPub := ""
	if sign {
		gpg(t, g, nil, "--passphrase", "", "--quick-gen-key", "Gina <gina@example.net>", "future-default", "default", "never")
		signerPub = writeFile(t, t.TempDir(), "gina.asc", gpg(t, g, nil, "--armor", "--export", "gina@example.net"))
		args = append(args, "--passphrase", "", "--local-user", "gina@example.net", "--sign")
	}
	return gpg(t, g, entity, append(args, "--encrypt")...), signerPub
}

func sqEncrypt(t *testing.T, pub string, entity []byte, sign bool) ([]byte, string) {
	dir := t.TempDir()
	args := []string{"encrypt", "--recipient-cert", pub}
	signerPub := ""
	if sign {
		key, cert := filepath.Join(dir, "sam.key"), filepath.Join(dir, "sam.cert")
		tool(t, dir, nil, nil, "sq", "key", "generate", "--userid", "<sam@example.net>", "--export", key)
		tool(t, dir, nil, nil, "sq", "key", "extract-cert", "--output", cert, key)
		signerPub, args = cert, append(args, "--signer-key", key)
	}
	return tool(t, dir, entity, nil, "sq", args...), signerPub
}

func rnpEncrypt(t *testing.T, pub string, entity []byte, sign bool) ([]byte, string) {
	dir := t.TempDir()
	tool(t, dir, nil, nil, "rnpkeys", "--homedir", dir, "--import", pub)
	in := writeFile(t, dir, "entity.txt", entity)
	out := filepath.Join(dir, "msg.asc")
	args := []string{"--homedir", dir, "--encrypt", "-r", "alice@example.org", "--armor", "--output", out}
	signerPub := ""
	if sign {
		tool(t, dir, nil, nil, "rnpkeys", "--homedir", dir, "--generate-key", "--userid", "Rita <rita@example.net>", "--password", "")
		signerPub = filepath.Join(dir, "rita.asc")
		tool(t, dir, nil, nil, "rnpkeys", "--homedir", dir, "--export-key", "rita@example.net", "--output", signerPub)
		args = append(args, "--sign", "-u", "rita@example.net", "--password", "")
	}
	tool(t, dir, nil, nil, "rnp", append(args, in)...)
	return readFile(t, out), signerPub
}

var peers = map[string]peerEncrypt{"gpg": gpgEncrypt, "sq": sqEncrypt, "rnp": rnpEncrypt}

func TestPeersEncryptToSealmailKey(t *testing.T) {
	t.Parallel()
	a := alice(t)
	pub := writeFile(t, t.TempDir(), "alice.asc", a.public(t))
	entity := []byte(crlf("Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "", "Grüße from a peer"))
	for name, encrypt := range peers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			armored, _ := encrypt(t, pub, entity, false)
			r := a.decrypt(t, pgpMIMEMessage(outer, armored))
			if _, body := splitOutput(t, r.stdout); r.code != 0 || body != "Grüße from a peer\r\n" {
				t.Errorf("PGP/MIME: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			r = a.decrypt(t, inlineMessage(outer, armored))
			if _, body := splitOutput(t, r.stdout); r.code != 0 || body != string(entity) {
				t.Errorf("inline: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// peerSigners are the addresses the peers sign as.
var peerSigners = map[string]string{"gpg": "gina@example.net", "sq": "sam@example.net", "rnp": "rita@example.net"}

// TestPeersSignAndEncrypt: a message signed inside the encryption (what
// Thunderbird and gpg --sign --encrypt write) verifies with the signer's
// key given as --key: good when the From is the signer, mismatch when it
// is someone else (reliability.md P2); and it is unknown-key without the
// key.
func TestPeersSignAndEncrypt(t *testing.T) {
	t.Parallel()
	a := alice(t)
	pub := writeFile(t, t.TempDir(), "alice.asc", a.public(t))
	entity := []byte(crlf("Content-Type: text/plain", "", "signed by a peer"))
	for name, encrypt := range peers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			armored, signerPub := encrypt(t, pub, entity, true)
			fromSigner := strings.Replace(outer, "Bob <bob@example.net>", "Signer <"+peerSigners[name]+">", 1)
			r := a.decrypt(t, pgpMIMEMessage(fromSigner, armored), "--key", signerPub)
			if r.code != 0 || !strings.HasPrefix(r.stdout, "X-Sealmail-Signature: good\r\nX-Sealmail-Signer: ") ||
				!strings.HasPrefix(r.stderr, "sealmail: signature: good (key ") {
				t.Errorf("with the signer's key: exit %d, stdout %.120q, stderr %q", r.code, r.stdout, r.stderr)
			}
			msg := pgpMIMEMessage(outer, armored)
			r = a.decrypt(t, msg, "--key", signerPub)
			if r.code != 0 || !strings.HasPrefix(r.stdout, "X-Sealmail-Signature: mismatch\r\nX-Sealmail-Signer: ") ||
				!strings.Contains(r.stderr, "signed by "+peerSigners[name]+", not by the From address bob@example.net") {
				t.Errorf("From someone else: exit %d, stdout %.120q, stderr %q", r.code, r.stdout, r.stderr)
			}
			r = a.decrypt(t, msg)
			if r.code != 0 || !strings.HasPrefix(r.stdout, "X-Sealmail-Signature: unknown-key\r\nFrom:") ||
				r.stderr != "sealmail: signature: unknown-key\n" {
				t.Errorf("without it: exit %d, stdout %.120q, stderr %q", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// TestExportedSecretKeyDecryptsGatewayMail: `sealmail export --secret`
// goes into gpg, rnp and sq, and each decrypts what the gateway
// (pgp.Encrypt) writes to the key. This is also why the default profile
// does not advertise SEIPDv2: the gateway would then write AEAD messages
// that GnuPG 2.2 and RNP 0.16 cannot read.
func TestExportedSecretKeyDecryptsGatewayMail(t *testing.T) {
	t.Parallel()
	a := alice(t)
	r := mustSealmail(t, nil, "export", "--secret", "--home", a.dir)
	if !strings.HasPrefix(r.stdout, "-----BEGIN PGP PRIVATE KEY BLOCK-----") || !strings.Contains(r.stderr, "secret key") {
		t.Fatalf("export --secret: %.60q, stderr %q", r.stdout, r.stderr)
	}
	dir := t.TempDir()
	secret := writeFile(t, dir, "alice.sec", []byte(r.stdout))
	want := []byte(crlf("Content-Type: text/plain", "", "from the gateway"))
	msg := writeFile(t, dir, "msg.asc", encryptArmored(t, want, a.cert(t)))

	t.Run("gpg", func(t *testing.T) {
		g := gpgHome(t)
		gpg(t, g, nil, "--passphrase", testPassphrase, "--import", secret)
		if got := gpg(t, g, nil, "--passphrase", testPassphrase, "--decrypt", msg); !bytes.Equal(got, want) {
			t.Errorf("gpg decrypted %q", got)
		}
	})
	t.Run("rnp", func(t *testing.T) {
		h := t.TempDir()
		tool(t, h, nil, nil, "rnpkeys", "--homedir", h, "--import", secret)
		out := filepath.Join(h, "out")
		tool(t, h, nil, nil, "rnp", "--homedir", h, "--password", testPassphrase, "--decrypt", msg, "--output", out)
		if got := readFile(t, out); !bytes.Equal(got, want) {
			t.Errorf("rnp decrypted %q", got)
		}
	})
	t.Run("sq", func(t *testing.T) {
		// sq 0.27 reads a key's password only from a terminal.
		out := filepath.Join(t.TempDir(), "out")
		p := newPTY(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		path, err := exec.LookPath("sq")
		if err != nil {
			t.Fatal("sq is not installed")
		}
		cmd := exec.CommandContext(ctx, path, "decrypt", "--recipient-key", secret, "--output", out, msg)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = p.slave, p.slave, p.slave
		cmd.SysProcAttr = p.sysProcAttr(0)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p.answer(t, "assword", 1, testPassphrase)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("sq decrypt: %v\nterminal: %q", err, p.output())
		}
		if got := readFile(t, out); !bytes.Equal(got, want) {
			t.Errorf("sq decrypted %q", got)
		}
	})
}
