package smime

import (
	"crypto/x509"
	"testing"
)

// Encrypt throughput to one RSA-2048 recipient: the S/MIME half of the
// S/MIME vs PGP messages/s figure (issue 3's closing note).
func benchmarkEncrypt(b *testing.B, size int) {
	Setup()
	root := newCA(b, "Bench Root", nil)
	leaf := root.issue(b, leafTemplate("bob@example.org"), nil)
	msg := sampleEntity(size)[:size]
	to := []*x509.Certificate{leaf}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encrypt(msg, to); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncrypt4K(b *testing.B) { benchmarkEncrypt(b, 4<<10) }
func BenchmarkEncrypt1M(b *testing.B) { benchmarkEncrypt(b, 1<<20) }

func BenchmarkDecrypt4K(b *testing.B) {
	Setup()
	root := newCA(b, "Bench Root", nil)
	leaf := root.issue(b, leafTemplate("bob@example.org"), nil)
	der, err := Encrypt(sampleEntity(4 << 10)[:4<<10], []*x509.Certificate{leaf})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(4 << 10)
	for b.Loop() {
		if _, err := Decrypt(der, leaf, rsaKey(b, 1)); err != nil {
			b.Fatal(err)
		}
	}
}
