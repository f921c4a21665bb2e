package httpd

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/keydir/wkd"
)

// benchDir is a SQLite directory of n generated keys in example.org.
func benchDir(b *testing.B, n int) (*keydir.SQLStore, []string) {
	b.Helper()
	s, err := keydir.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "dir.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	var hashes []string
	for i := 0; i < n; i++ {
		addr := fmt.Sprintf("user%05d@example.org", i)
		e, err := openpgp.NewEntity("", "", addr, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
		if err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		e.Serialize(&buf)
		k := keydir.Key{Fingerprint: strings.ToUpper(fmt.Sprintf("%x", e.PrimaryKey.Fingerprint)), Kind: keydir.KindPGP,
			Data: buf.Bytes(), Addresses: []string{addr}}
		if err := s.Put(context.Background(), k); err != nil {
			b.Fatal(err)
		}
		hashes = append(hashes, wkd.Hash(addr[:strings.IndexByte(addr, '@')]))
	}
	return s, hashes
}

// BenchmarkWKD separates the store lookup, building an answer (parse,
// reduce, serialise) and the whole handler with its cache warm.
func BenchmarkWKD(b *testing.B) {
	s, hashes := benchDir(b, 1000)
	ctx := context.Background()
	b.Run("store-lookup", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := s.LookupWKD(ctx, "example.org", hashes[i%len(hashes)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("answer-uncached", func(b *testing.B) {
		keys, _ := s.LookupWKD(ctx, "example.org", hashes[0])
		for i := 0; i < b.N; i++ {
			if _, err := WKDAnswer(keys, "example.org", hashes[0], time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("handler-cached", func(b *testing.B) {
		h, err := New(Options{Store: s, Domains: []string{"example.org"}})
		if err != nil {
			b.Fatal(err)
		}
		for _, hash := range hashes { // warm the cache
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/.well-known/openpgpkey/example.org/hu/"+hash, nil))
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/.well-known/openpgpkey/example.org/hu/"+hashes[i%len(hashes)], nil))
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d", rec.Code)
			}
		}
	})
}
