package smime

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzReadCerts: ReadCerts never panics; it returns certificates or an
// error, never both; and input with a private key PEM label never yields
// certificates. Seeds: testdata/fuzz/FuzzReadCerts and the ones below.
func FuzzReadCerts(f *testing.F) {
	root := newCA(f, "Fuzz Root", nil)
	leaf := root.issue(f, leafTemplate("bob@example.org"), nil)
	f.Add(certPEM(leaf))
	f.Add(leaf.Raw)
	f.Add(append(certPEM(leaf), keyPEM(f, rsaKey(f, 1))...))
	f.Add([]byte{0x30, 0x80, 0x02, 0x01, 0x03, 0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ReadCerts(data)
		if (err == nil) == (len(certs) == 0) {
			t.Fatalf("ReadCerts = %d certs, %v: want certificates or an error", len(certs), err)
		}
		for _, c := range certs {
			if c == nil {
				t.Fatal("nil certificate")
			}
		}
		if err == nil && bytes.Contains(data, []byte("PRIVATE KEY-----")) && bytes.Contains(data, []byte("-----BEGIN ")) {
			// Only acceptable if no BEGIN line carries that label.
			for _, line := range bytes.Split(data, []byte("-----BEGIN ")) {
				label, _, _ := bytes.Cut(line, []byte("-----"))
				if bytes.Contains(bytes.ToUpper(label), []byte("PRIVATE KEY")) {
					t.Fatalf("certificates returned from input with a %q block", label)
				}
			}
		}
		if errors.Is(err, ErrPrivateKey) && certs != nil {
			t.Fatal("certificates returned with ErrPrivateKey")
		}
	})
}

// FuzzDecrypt: Decrypt never panics and fails only with exactly ErrDecrypt.
func FuzzDecrypt(f *testing.F) {
	fx := newDecryptFixture(f)
	f.Add(fx.der)
	f.Add([]byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03, 0xa0, 0x80, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := Decrypt(data, fx.cert, fx.key); err != nil && err != ErrDecrypt {
			t.Fatalf("Decrypt = %v; want nil or exactly ErrDecrypt", err)
		}
	})
}

// FuzzBERToDER: the re-encoding is DER, so a second pass changes nothing.
func FuzzBERToDER(f *testing.F) {
	f.Add([]byte{0x30, 0x80, 0x24, 0x80, 0x04, 0x01, 'a', 0x04, 0x01, 'b', 0, 0, 0, 0})
	f.Add([]byte{0x30, 0x81, 0x03, 0x02, 0x01, 0x05})
	f.Add([]byte{0x1f, 0x81, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		der, err := berToDER(data)
		if err != nil {
			return
		}
		again, err := berToDER(der)
		if err != nil || !bytes.Equal(again, der) {
			t.Fatalf("berToDER is not idempotent on % x: % x, then % x (%v)", data, der, again, err)
		}
	})
}
