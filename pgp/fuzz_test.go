package pgp

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// FuzzReadCerts feeds arbitrary input to ReadCerts and to the checks run
// on what it returns. Nothing may panic, and no secret key may come out.
func FuzzReadCerts(f *testing.F) {
	for _, kind := range []keyKind{kindCv25519, kindX25519, kindV6} {
		e := testKey(f, kind)
		pub := publicBytes(f, e)
		f.Add(pub)
		f.Add(armorBytes(f, armorPublicKey, pub))
		f.Add(secretBytes(f, e))
	}
	f.Add([]byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxsBN\n-----END PGP PUBLIC KEY BLOCK-----\n"))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, input []byte) {
		certs, err := ReadCerts(bytes.NewReader(input), 1<<20)
		if err != nil {
			if certs != nil {
				t.Fatalf("certs returned with error %v", err)
			}
			return
		}
		if len(certs) == 0 {
			t.Fatal("no certs and no error")
		}
		for _, c := range certs {
			if refuseSecretEntity(c.Entity) != nil {
				t.Fatal("ReadCerts returned secret key material")
			}
			if err := refuseSecretPackets(c.Bytes()); errors.Is(err, ErrSecretKey) {
				t.Fatal("Bytes returned secret key material")
			}
			_ = c.Fingerprint()
			_ = c.Addresses()
			_ = c.CheckEncryption(now)
		}
	})
}
