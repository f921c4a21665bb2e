package smime

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"go.mozilla.org/pkcs7"
)

// sampleEntity is a MIME entity like the gateway encrypts: CRLF lines,
// 8-bit text, and n extra bytes of body.
func sampleEntity(n int) []byte {
	var b bytes.Buffer
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\nSubject: Grüße\r\n\r\n")
	for i := 0; b.Len() < n; i++ {
		b.WriteString("Zeile ")
		b.WriteString(strings.Repeat("ä", i%7))
		b.WriteString(" — line of the privileged memo\r\n")
	}
	return b.Bytes()
}

// The before-Setup and globals-changed checks need a process in which
// Setup was never called, so they run in a child test process.
const freshProcessEnv = "SEALGATE_SMIME_FRESH_PROCESS"

func TestEncryptBeforeSetup(t *testing.T) {
	if os.Getenv(freshProcessEnv) == "1" {
		root := newCA(t, "Test Root", nil)
		leaf := root.issue(t, leafTemplate("bob@example.org"), nil)
		if _, err := Encrypt([]byte("x"), []*x509.Certificate{leaf}); !errors.Is(err, ErrNotSetUp) {
			t.Fatalf("Encrypt before Setup = %v; want ErrNotSetUp", err)
		}
		Setup()
		if _, err := Encrypt([]byte("x"), []*x509.Certificate{leaf}); err != nil {
			t.Fatalf("Encrypt after Setup = %v", err)
		}
		// Someone resets pkcs7's global to its DES default behind our back.
		pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmDESCBC
		if _, err := Encrypt([]byte("x"), []*x509.Certificate{leaf}); !errors.Is(err, ErrNotSetUp) {
			t.Fatalf("Encrypt with the DES global = %v; want ErrNotSetUp", err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEncryptBeforeSetup$", "-test.count=1")
	cmd.Env = append(os.Environ(), freshProcessEnv+"=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child process: %v\n%s", err, out)
	}
}

func TestEncryptAES256CBCConcurrently(t *testing.T) {
	// Reliability reference C6: 100 concurrent encryptions, race detector
	// clean, every output AES-256-CBC.
	Setup()
	root := newCA(t, "Test Root", nil)
	leaf := root.issue(t, leafTemplate("bob@example.org"), nil)
	msg := sampleEntity(4096)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Go(func() {
			der, err := Encrypt(msg, []*x509.Certificate{leaf})
			if err != nil {
				errs <- err
				return
			}
			alg, err := ContentAlgorithm(der)
			if err != nil {
				errs <- err
				return
			}
			if !alg.Equal(oidAES256CBC) {
				errs <- errors.New("content algorithm " + alg.String())
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestEncryptRoundTrip(t *testing.T) {
	Setup()
	root := newCA(t, "Test Root", nil)
	alice := root.issue(t, leafTemplate("alice@example.org"), rsaKey(t, 1).Public())
	bob := root.issue(t, leafTemplate("bob@example.org"), rsaKey(t, 2).Public())
	for _, n := range []int{0, 1, 15, 16, 17, 4096, 70000} {
		msg := sampleEntity(0)[:0]
		if n > 0 {
			msg = sampleEntity(n)[:n]
		}
		der, err := Encrypt(msg, []*x509.Certificate{alice, bob})
		if err != nil {
			t.Fatalf("Encrypt(%d bytes): %v", n, err)
		}
		for i, rc := range []*x509.Certificate{alice, bob} {
			got, err := Decrypt(der, rc, rsaKey(t, 1+i))
			if err != nil || !bytes.Equal(got, msg) {
				t.Errorf("Decrypt(%d bytes) for recipient %d = %d bytes, %v; want the input", n, i, len(got), err)
			}
		}
	}
}

func TestEncryptRefuses(t *testing.T) {
	Setup()
	root := newCA(t, "Test Root", nil)
	loadTestKeys(t)
	ec := root.issue(t, leafTemplate("ec@example.org"), testKeys.ec.Public())
	rsaCert := root.issue(t, leafTemplate("bob@example.org"), nil)
	if _, err := Encrypt([]byte("x"), []*x509.Certificate{rsaCert, ec}); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("Encrypt to an EC certificate = %v; want ErrUnsupportedKey (and no panic in pkcs7)", err)
	}
	if _, err := Encrypt([]byte("x"), nil); err == nil {
		t.Error("Encrypt to nobody: want an error")
	}
	if _, err := Encrypt([]byte("x"), []*x509.Certificate{nil}); err == nil {
		t.Error("Encrypt to a nil certificate: want an error")
	}
}

func TestEncryptLeavesCallerBufferAlone(t *testing.T) {
	Setup()
	root := newCA(t, "Test Root", nil)
	leaf := root.issue(t, leafTemplate("bob@example.org"), nil)
	buf := make([]byte, 20, 64)
	copy(buf, "twenty bytes of body")
	spare := buf[:64]
	for i := 20; i < 64; i++ {
		spare[i] = 0xAA
	}
	if _, err := Encrypt(buf, []*x509.Certificate{leaf}); err != nil {
		t.Fatal(err)
	}
	for i := 20; i < 64; i++ {
		if spare[i] != 0xAA {
			t.Fatalf("Encrypt wrote padding into the caller's spare capacity at %d", i)
		}
	}
}

func TestWriteMIMEBody(t *testing.T) {
	for _, n := range []int{0, 1, 56, 57, 58, 57 * 64, 57*64 + 1, 100000} {
		der := bytes.Repeat([]byte{0x30, 0x82, 0xff, 0x00, 0x7f}, n/5+1)[:n]
		var b bytes.Buffer
		if err := WriteMIMEBody(&b, der); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if n == 0 && out != "" {
			t.Errorf("empty input wrote %q", out)
		}
		lines := strings.SplitAfter(out, "\r\n")
		if lines[len(lines)-1] != "" {
			t.Errorf("n=%d: output does not end in CRLF", n)
		}
		var joined strings.Builder
		for i, l := range lines[:len(lines)-1] {
			body, ok := strings.CutSuffix(l, "\r\n")
			if !ok || strings.ContainsAny(body, "\r\n") {
				t.Fatalf("n=%d: line %d %q is not CRLF-terminated", n, i, l)
			}
			if len(body) > 76 || (i < len(lines)-2 && len(body) != 76) {
				t.Fatalf("n=%d: line %d has %d characters", n, i, len(body))
			}
			joined.WriteString(body)
		}
		got, err := base64.StdEncoding.DecodeString(joined.String())
		if err != nil || !bytes.Equal(got, der) {
			t.Errorf("n=%d: base64 does not decode to the input (%v)", n, err)
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteMIMEBodyWriteError(t *testing.T) {
	if err := WriteMIMEBody(failWriter{}, []byte("x")); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("WriteMIMEBody = %v; want the write error", err)
	}
}

func TestMIMEHeader(t *testing.T) {
	h := MIMEHeader()
	if h[0] != [2]string{"Content-Type", "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m"} ||
		h[1] != [2]string{"Content-Transfer-Encoding", "base64"} ||
		h[2] != [2]string{"Content-Disposition", "attachment; filename=smime.p7m"} {
		t.Errorf("MIMEHeader = %q", h)
	}
}

// Regression: pkcs7 writes encryptedContent as a constructed [0] holding an
// OCTET STRING; gpgsm 2.2 (libksba) then fails with "invalid padding".
// Encrypt re-encodes it primitive, as DER wants.
func TestEncryptWritesPrimitiveEncryptedContent(t *testing.T) {
	Setup()
	root := newCA(t, "Test Root", nil)
	leaf := root.issue(t, leafTemplate("bob@example.org"), nil)
	der, err := Encrypt(sampleEntity(300), []*x509.Certificate{leaf})
	if err != nil {
		t.Fatal(err)
	}
	env, err := parseEnvelope(der)
	if err != nil {
		t.Fatal(err)
	}
	ec := env.content.EncryptedContent
	if ec.IsCompound || ec.Class != 2 || ec.Tag != 0 || len(ec.Bytes)%16 != 0 {
		t.Errorf("encryptedContent: compound %v, class %d, tag %d, %d bytes; want primitive [0] of whole blocks",
			ec.IsCompound, ec.Class, ec.Tag, len(ec.Bytes))
	}
	if reenc, err := berToDER(der); err != nil || !bytes.Equal(reenc, der) {
		t.Errorf("Encrypt output is not DER (re-encoding changes it: %v)", err)
	}
}
