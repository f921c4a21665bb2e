package pgp

import (
	"fmt"
	"testing"
)

func BenchmarkEncrypt4K(b *testing.B)   { benchmarkEncrypt(b, 4<<10) }
func BenchmarkEncrypt100K(b *testing.B) { benchmarkEncrypt(b, 100<<10) }

// benchmarkEncrypt measures EncryptMIME (encryption, armor, CRLF framing)
// of size bytes to one recipient of each key kind.
func benchmarkEncrypt(b *testing.B, size int) {
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte('a' + i%26)
	}
	for _, kind := range []keyKind{kindX25519, kindCv25519, kindRSA3072} {
		b.Run(fmt.Sprint(kind), func(b *testing.B) {
			to := []*Cert{certOf(b, testKey(b, kind))}
			boundary := NewBoundary()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				w, err := EncryptMIME(discard{}, boundary, to, EncryptOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := w.Write(msg); err != nil {
					b.Fatal(err)
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
