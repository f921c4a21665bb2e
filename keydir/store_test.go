package keydir

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// testStore is the behaviour every Store must have. open returns a new,
// empty store that is closed when the test ends.
func testStore(t *testing.T, open func(t *testing.T) Store) {
	t.Run("PutGet", func(t *testing.T) { testPutGet(t, open(t)) })
	t.Run("GetNotFound", func(t *testing.T) { testGetNotFound(t, open(t)) })
	t.Run("Lookup", func(t *testing.T) { testLookup(t, open(t)) })
	t.Run("Upsert", func(t *testing.T) { testUpsert(t, open(t)) })
	t.Run("List", func(t *testing.T) { testList(t, open(t)) })
	t.Run("Remove", func(t *testing.T) { testRemove(t, open(t)) })
	t.Run("RemoveAddress", func(t *testing.T) { testRemoveAddress(t, open(t)) })
	t.Run("PutRejects", func(t *testing.T) { testPutRejects(t, open(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, open(t)) })
	t.Run("ConcurrentSameKey", func(t *testing.T) { testConcurrentSameKey(t, open(t)) })
	testAdmin(t, open)
}

// fakeKey is a key with a well-formed fingerprint derived from n; the store
// does not parse Data.
func fakeKey(n int, addrs ...string) Key {
	return Key{
		Fingerprint: fmt.Sprintf("%040X", n),
		Kind:        KindPGP,
		Data:        fmt.Appendf(nil, "key data %d", n),
		Addresses:   addrs,
	}
}

// fakeTime is a fixed instant for tests that need one.
func fakeTime() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }

func mustPut(t testing.TB, s Store, k Key) {
	t.Helper()
	if err := s.Put(t.Context(), k); err != nil {
		t.Fatalf("Put(%s): %v", k.Fingerprint, err)
	}
}

func fingerprints(keys []Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Fingerprint
	}
	return out
}

func testPutGet(t *testing.T, s Store) {
	k := fakeKey(0xabc, "Alice@Bücher.Example", "alice@xn--bcher-kva.example", "<BOB@example.org>")
	k.Fingerprint = "00000000000000000000000000000000000ABCDE"
	k.Kind = KindX509
	before := time.Now().Add(-time.Second)
	mustPut(t, s, k)

	got, err := s.Get(t.Context(), "00000000000000000000000000000000000abcde")
	if err != nil {
		t.Fatalf("Get with lower-case fingerprint: %v", err)
	}
	if _, err := s.Get(t.Context(), " 0000 0000 0000 0000 0000  0000 0000 0000 000a bcde "); err != nil {
		t.Errorf("Get with grouped fingerprint: %v", err)
	}
	if got.Fingerprint != k.Fingerprint || got.Kind != KindX509 || !bytes.Equal(got.Data, k.Data) {
		t.Errorf("Get = %s %s %q; want %s %s %q", got.Fingerprint, got.Kind, got.Data, k.Fingerprint, k.Kind, k.Data)
	}
	wantAddrs := []string{"alice@xn--bcher-kva.example", "bob@example.org"}
	if !slices.Equal(got.Addresses, wantAddrs) {
		t.Errorf("Addresses = %q; want normalised, deduplicated, sorted %q", got.Addresses, wantAddrs)
	}
	if got.Created.Location() != time.UTC || got.Updated.Location() != time.UTC {
		t.Errorf("times are not UTC: %v, %v", got.Created, got.Updated)
	}
	if got.Created.Before(before) || !got.Created.Equal(got.Updated) {
		t.Errorf("Created %v, Updated %v; want both now (after %v) and equal", got.Created, got.Updated, before)
	}
}

func testGetNotFound(t *testing.T, s Store) {
	_, err := s.Get(t.Context(), fakeKey(1).Fingerprint)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a missing key: err = %v; want ErrNotFound", err)
	}
	if _, err := s.Get(t.Context(), "not hex"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Get(%q): err = %v; want a validation error", "not hex", err)
	}
}

func testLookup(t *testing.T, s Store) {
	mustPut(t, s, fakeKey(2, "alice@bücher.example", "shared@example.org"))
	mustPut(t, s, fakeKey(1, "shared@example.org"))
	mustPut(t, s, fakeKey(3, "alice@example.org.evil.example"))

	for _, q := range []string{"ALICE@Bücher.Example", "alice@xn--bcher-kva.example", "<Alice@XN--BCHER-KVA.example.>"} {
		keys, err := s.Lookup(t.Context(), q)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", q, err)
		}
		if got := fingerprints(keys); !slices.Equal(got, []string{fakeKey(2).Fingerprint}) {
			t.Errorf("Lookup(%q) = %v; want key 2 only", q, got)
		}
		if len(keys) == 1 && !slices.Equal(keys[0].Addresses, []string{"alice@xn--bcher-kva.example", "shared@example.org"}) {
			t.Errorf("Lookup(%q) key addresses = %q; want all of the key's addresses", q, keys[0].Addresses)
		}
	}
	keys, err := s.Lookup(t.Context(), "Shared@Example.org")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fingerprints(keys), []string{fakeKey(1).Fingerprint, fakeKey(2).Fingerprint}; !slices.Equal(got, want) {
		t.Errorf("Lookup(shared) = %v; want %v in fingerprint order", got, want)
	}
	// Exact match only: no substring or sub-domain hits (reliability K2).
	for _, q := range []string{"alice@example.org", "nobody@example.org", "alice@bücher.example.evil"} {
		keys, err := s.Lookup(t.Context(), q)
		if err != nil || keys == nil || len(keys) != 0 {
			t.Errorf("Lookup(%q) = %v, %v; want an empty non-nil slice", q, fingerprints(keys), err)
		}
	}
	if _, err := s.Lookup(t.Context(), "not an address"); err == nil {
		t.Error("Lookup of an invalid address: want an error")
	}
}

func testUpsert(t *testing.T, s Store) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.FixedZone("CET", 3600))
	k := fakeKey(7, "old@example.org", "kept@example.org")
	k.Updated = t0
	mustPut(t, s, k)

	k2 := fakeKey(7, "new@example.org", "kept@example.org")
	k2.Data = []byte("replacement")
	k2.Created = t0.Add(72 * time.Hour) // must be ignored: the key exists
	k2.Updated = t0.Add(time.Hour)
	mustPut(t, s, k2)

	got, err := s.Get(t.Context(), k.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Created.Equal(t0) || got.Created.Location() != time.UTC {
		t.Errorf("Created = %v; want the first Put's %v in UTC", got.Created, t0.UTC())
	}
	if !got.Updated.Equal(t0.Add(time.Hour)) {
		t.Errorf("Updated = %v; want %v", got.Updated, t0.Add(time.Hour).UTC())
	}
	if string(got.Data) != "replacement" {
		t.Errorf("Data = %q; want the replacement", got.Data)
	}
	if want := []string{"kept@example.org", "new@example.org"}; !slices.Equal(got.Addresses, want) {
		t.Errorf("Addresses = %q; want %q", got.Addresses, want)
	}
	if keys, err := s.Lookup(t.Context(), "old@example.org"); err != nil || len(keys) != 0 {
		t.Errorf("Lookup(old address) = %v, %v; want nothing after the upsert", fingerprints(keys), err)
	}
	if all, err := s.List(t.Context()); err != nil || len(all) != 1 {
		t.Errorf("List = %v, %v; want one key", fingerprints(all), err)
	}
}

func testList(t *testing.T, s Store) {
	if keys, err := s.List(t.Context()); err != nil || keys == nil || len(keys) != 0 {
		t.Errorf("List of an empty store = %v, %v; want an empty non-nil slice", keys, err)
	}
	for _, n := range []int{0xff, 3, 0xa0, 1} {
		mustPut(t, s, fakeKey(n, fmt.Sprintf("u%d@example.org", n)))
	}
	mustPut(t, s, fakeKey(2)) // a key without addresses is listed too
	keys, err := s.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range []int{1, 2, 3, 0xa0, 0xff} {
		want = append(want, fakeKey(n).Fingerprint)
	}
	if got := fingerprints(keys); !slices.Equal(got, want) {
		t.Errorf("List = %v; want %v", got, want)
	}
	if len(keys) == len(want) && (len(keys[1].Addresses) != 0 || !slices.Equal(keys[0].Addresses, []string{"u1@example.org"})) {
		t.Errorf("List addresses: key 1 %q, key 2 %q", keys[0].Addresses, keys[1].Addresses)
	}
}

func testRemove(t *testing.T, s Store) {
	mustPut(t, s, fakeKey(1, "a@example.org"))
	mustPut(t, s, fakeKey(2, "a@example.org"))
	if err := s.Remove(t.Context(), "0000000000000000000000000000000000000001"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := s.Get(t.Context(), fakeKey(1).Fingerprint); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove: err = %v; want ErrNotFound", err)
	}
	keys, err := s.Lookup(t.Context(), "a@example.org")
	if err != nil || !slices.Equal(fingerprints(keys), []string{fakeKey(2).Fingerprint}) {
		t.Errorf("Lookup after Remove = %v, %v; want key 2 only", fingerprints(keys), err)
	}
	if err := s.Remove(t.Context(), fakeKey(1).Fingerprint); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: err = %v; want ErrNotFound", err)
	}
}

func testRemoveAddress(t *testing.T, s Store) {
	mustPut(t, s, fakeKey(2, "shared@example.org", "other@example.org"))
	mustPut(t, s, fakeKey(1, "shared@example.org"))
	mustPut(t, s, fakeKey(3, "other@example.org"))

	got, err := s.RemoveAddress(t.Context(), "<SHARED@Example.Org>")
	if err != nil {
		t.Fatalf("RemoveAddress: %v", err)
	}
	if want := []string{fakeKey(1).Fingerprint, fakeKey(2).Fingerprint}; !slices.Equal(got, want) {
		t.Errorf("RemoveAddress = %v; want %v", got, want)
	}
	keys, err := s.List(t.Context())
	if err != nil || !slices.Equal(fingerprints(keys), []string{fakeKey(3).Fingerprint}) {
		t.Errorf("List after RemoveAddress = %v, %v; want key 3 only", fingerprints(keys), err)
	}
	keys, err = s.Lookup(t.Context(), "other@example.org")
	if err != nil || !slices.Equal(fingerprints(keys), []string{fakeKey(3).Fingerprint}) {
		t.Errorf("Lookup(other) = %v, %v; want key 3 only (key 2 was removed whole)", fingerprints(keys), err)
	}
	if _, err := s.RemoveAddress(t.Context(), "shared@example.org"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second RemoveAddress: err = %v; want ErrNotFound", err)
	}
}

func testPutRejects(t *testing.T, s Store) {
	bad := map[string]Key{
		"empty fingerprint": {Kind: KindPGP, Data: []byte("x")},
		"non-hex":           {Fingerprint: "XYZ", Kind: KindPGP, Data: []byte("x")},
		"unknown kind":      {Fingerprint: "AB", Kind: "ssh", Data: []byte("x")},
		"no data":           {Fingerprint: "AB", Kind: KindPGP},
		"bad address":       {Fingerprint: "AB", Kind: KindPGP, Data: []byte("x"), Addresses: []string{"ok@example.org", "no at sign"}},
	}
	for name, k := range bad {
		if err := s.Put(t.Context(), k); err == nil {
			t.Errorf("Put(%s): want an error", name)
		}
	}
	if keys, err := s.List(t.Context()); err != nil || len(keys) != 0 {
		t.Errorf("List after rejected Puts = %v, %v; want nothing stored", fingerprints(keys), err)
	}
}

func testConcurrent(t *testing.T, s Store) {
	const workers, perWorker = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			addr := fmt.Sprintf("worker%d@example.org", w)
			for i := range perWorker {
				k := fakeKey(w*1000+i, addr, "all@example.org")
				if err := s.Put(t.Context(), k); err != nil {
					t.Errorf("worker %d: Put: %v", w, err)
					return
				}
				keys, err := s.Lookup(t.Context(), addr)
				if err != nil || len(keys) != i+1 {
					t.Errorf("worker %d: Lookup after %d puts = %d keys, %v", w, i+1, len(keys), err)
					return
				}
			}
		})
	}
	wg.Wait()
	keys, err := s.Lookup(t.Context(), "all@example.org")
	if err != nil || len(keys) != workers*perWorker {
		t.Errorf("Lookup(all) = %d keys, %v; want %d", len(keys), err, workers*perWorker)
	}
}
