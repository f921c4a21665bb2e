package keydir

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testAdmin is the behaviour of the Admin half of every Store.
func testAdmin(t *testing.T, open func(t *testing.T) Store) {
	t.Run("Tokens", func(t *testing.T) { testTokens(t, open(t)) })
	t.Run("TokenWrongSecret", func(t *testing.T) { testTokenWrongSecret(t, open(t)) })
	t.Run("TokenRevoke", func(t *testing.T) { testTokenRevoke(t, open(t)) })
	t.Run("History", func(t *testing.T) { testHistory(t, open(t)) })
	t.Run("HistoryRejectedPut", func(t *testing.T) { testHistoryRejectedPut(t, open(t)) })
	t.Run("KeyID", func(t *testing.T) { testKeyID(t, open(t)) })
	t.Run("WKD", func(t *testing.T) { testLookupWKD(t, open(t)) })
}

var tokenIDPattern = regexp.MustCompile(`^[0-9a-f]{8}$`)

func testTokens(t *testing.T, s Store) {
	ctx := t.Context()
	before := time.Now().Add(-time.Second)
	secret, tok, err := s.CreateToken(ctx, "  ci deploy ", ScopeWrite)
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	if !strings.HasPrefix(secret, "sgt_") || len(secret) != 4+52 {
		t.Errorf("secret %q: want sgt_ and 52 base32 characters", secret)
	}
	if !tokenIDPattern.MatchString(tok.ID) || tok.Name != "ci deploy" || tok.Scope != ScopeWrite ||
		tok.Created.Before(before) || !tok.Revoked.IsZero() {
		t.Errorf("CreateToken = %+v; want an 8-hex ID, the trimmed name, write scope, created now", tok)
	}
	secret2, tok2, err := s.CreateToken(ctx, "read-only monitor", ScopeRead)
	if err != nil {
		t.Fatal(err)
	}
	if secret2 == secret || tok2.ID == tok.ID {
		t.Errorf("two tokens share a secret or an ID: %s %s", tok.ID, tok2.ID)
	}

	for _, presented := range []string{secret, secret + "\n", " " + secret} {
		got, err := s.AuthenticateToken(ctx, presented)
		if err != nil {
			t.Fatalf("AuthenticateToken(%q): %v", presented, err)
		}
		if got.ID != tok.ID || got.Name != tok.Name || got.Scope != ScopeWrite || !got.Created.Equal(tok.Created) {
			t.Errorf("AuthenticateToken = %+v; want %+v", got, tok)
		}
	}
	if got, err := s.AuthenticateToken(ctx, secret2); err != nil || got.ID != tok2.ID || got.Scope != ScopeRead {
		t.Errorf("AuthenticateToken(second) = %+v, %v; want the read token", got, err)
	}

	list, err := s.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != tok.ID || list[1].ID != tok2.ID || list[1].Name != "read-only monitor" {
		t.Errorf("ListTokens = %+v; want both tokens, oldest first", list)
	}
	for _, l := range list {
		if l.Created.Location() != time.UTC || !l.Revoked.IsZero() {
			t.Errorf("listed token %+v: want a UTC creation time and no revocation", l)
		}
	}

	bad := map[string]Scope{"": ScopeRead, "   ": ScopeRead, "tab\tname": ScopeRead, "ok": "admin", "ok too": ""}
	for name, scope := range bad {
		if _, _, err := s.CreateToken(ctx, name, scope); err == nil || !strings.HasPrefix(err.Error(), "keydir: ") {
			t.Errorf("CreateToken(%q, %q): err = %v; want a keydir error", name, scope, err)
		}
	}
	if _, _, err := s.CreateToken(ctx, strings.Repeat("n", 101), ScopeRead); err == nil {
		t.Error("CreateToken with a 101-byte name: want an error")
	}
	if sq, ok := s.(*SQLStore); ok {
		checkSecretNotStored(t, sq, secret)
	}
}

// checkSecretNotStored checks that the tokens table holds the secret's
// SHA-256 and nothing that contains the secret itself.
func checkSecretNotStored(t *testing.T, s *SQLStore, secret string) {
	t.Helper()
	sum := sha256.Sum256([]byte(secret))
	var n int
	q := s.d.rebind(`SELECT COUNT(*) FROM tokens WHERE secret_hash = ?`)
	if err := s.db.QueryRowContext(t.Context(), q, sum[:]).Scan(&n); err != nil || n != 1 {
		t.Errorf("tokens with the secret's SHA-256 = %d, %v; want 1", n, err)
	}
	q = s.d.rebind(`SELECT COUNT(*) FROM tokens WHERE id = ? OR name = ? OR scope = ?`)
	if err := s.db.QueryRowContext(t.Context(), q, secret, secret, secret).Scan(&n); err != nil || n != 0 {
		t.Errorf("tokens with the secret in a text column = %d, %v; want 0", n, err)
	}
}

func testTokenWrongSecret(t *testing.T, s Store) {
	secret, _, err := s.CreateToken(t.Context(), "x", ScopeWrite)
	if err != nil {
		t.Fatal(err)
	}
	last := secret[len(secret)-1:]
	flipped := secret[:len(secret)-1] + map[bool]string{true: "b", false: "a"}[last == "a"]
	sum := sha256.Sum256([]byte(secret))
	for _, wrong := range []string{
		"", "sgt_", flipped, strings.TrimPrefix(secret, "sgt_"), strings.ToUpper(secret),
		secret[:len(secret)-1], secret + "x", fmt.Sprintf("%x", sum), "Bearer " + secret,
	} {
		if tok, err := s.AuthenticateToken(t.Context(), wrong); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("AuthenticateToken(%q) = %+v, %v; want ErrUnauthorized", wrong, tok, err)
		}
	}
}

func testTokenRevoke(t *testing.T, s Store) {
	ctx := t.Context()
	secret, tok, err := s.CreateToken(ctx, "laptop", ScopeWrite)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := s.CreateToken(ctx, "server", ScopeRead)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	if _, err := s.AuthenticateToken(ctx, secret); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("AuthenticateToken of a revoked token: err = %v; want ErrUnauthorized", err)
	}
	if _, err := s.AuthenticateToken(ctx, other); err != nil {
		t.Errorf("AuthenticateToken of the other token: %v", err)
	}
	revokedAt := func() time.Time {
		list, err := s.ListTokens(ctx)
		if err != nil || len(list) != 2 {
			t.Fatalf("ListTokens = %+v, %v", list, err)
		}
		if list[0].ID != tok.ID || list[0].Revoked.IsZero() || !list[1].Revoked.IsZero() {
			t.Errorf("ListTokens = %+v; want the first revoked, the second not", list)
		}
		return list[0].Revoked
	}
	first := revokedAt()
	if err := s.RevokeToken(ctx, tok.ID); err != nil {
		t.Errorf("second RevokeToken: %v; want success", err)
	}
	if again := revokedAt(); !again.Equal(first) {
		t.Errorf("second RevokeToken moved the revocation time from %v to %v", first, again)
	}
	if err := s.RevokeToken(ctx, "00000000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RevokeToken(unknown): err = %v; want ErrNotFound", err)
	}
}

// wantEvent is the part of an Event a test can predict.
type wantEvent struct {
	actor, action string
	key           int
	addrs         string
}

func checkHistory(t *testing.T, s Store, address string, want []wantEvent, from, to time.Time) {
	t.Helper()
	got, err := s.History(t.Context(), address)
	if err != nil {
		t.Fatalf("History(%s): %v", address, err)
	}
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		e, w := got[i], want[i]
		ok = e.Actor == w.actor && e.Action == w.action && e.Fingerprint == fakeKey(w.key).Fingerprint &&
			strings.Join(e.Addresses, " ") == w.addrs
	}
	if !ok {
		t.Errorf("History(%s):\n got %+v\nwant %+v", address, got, want)
	}
	for i, e := range got {
		if e.Time.Location() != time.UTC || e.Time.Before(from) || e.Time.After(to) ||
			(i > 0 && e.Time.Before(got[i-1].Time)) {
			t.Errorf("History(%s)[%d].Time = %v; want UTC, in order, within the test", address, i, e.Time)
		}
	}
}

func testHistory(t *testing.T, s Store) {
	from := time.Now().Add(-time.Second)
	cli := WithActor(t.Context(), "cli:alice")
	api := WithActor(t.Context(), "token:0badf00d")
	mustPutCtx(t, cli, s, fakeKey(1, "a@example.org", "b@example.org"))
	mustPutCtx(t, api, s, fakeKey(1, "a@example.org", "c@example.org"))
	mustPutCtx(t, WithAction(api, ActionRevoke), s, fakeKey(1, "a@example.org", "c@example.org"))
	if err := s.Remove(WithActor(t.Context(), "cli:bob"), fakeKey(1).Fingerprint); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, fakeKey(2, "A@example.org", "d@example.org")) // no actor
	if _, err := s.RemoveAddress(api, "a@example.org"); err != nil {
		t.Fatal(err)
	}
	to := time.Now().Add(time.Second)

	checkHistory(t, s, "<A@Example.ORG>", []wantEvent{
		{"cli:alice", "import", 1, "a@example.org b@example.org"},
		{"token:0badf00d", "update", 1, "a@example.org c@example.org"},
		{"token:0badf00d", "revoke", 1, "a@example.org c@example.org"},
		{"cli:bob", "remove", 1, "a@example.org c@example.org"},
		{"unknown", "import", 2, "a@example.org d@example.org"},
		{"token:0badf00d", "remove", 2, "a@example.org d@example.org"},
	}, from, to)
	// The update dropped b: its history shows that update, then nothing.
	checkHistory(t, s, "b@example.org", []wantEvent{
		{"cli:alice", "import", 1, "a@example.org b@example.org"},
		{"token:0badf00d", "update", 1, "a@example.org c@example.org"},
	}, from, to)
	checkHistory(t, s, "c@example.org", []wantEvent{
		{"token:0badf00d", "update", 1, "a@example.org c@example.org"},
		{"token:0badf00d", "revoke", 1, "a@example.org c@example.org"},
		{"cli:bob", "remove", 1, "a@example.org c@example.org"},
	}, from, to)
	if got, err := s.History(t.Context(), "nobody@example.org"); err != nil || got == nil || len(got) != 0 {
		t.Errorf("History(nobody) = %v, %v; want an empty non-nil slice", got, err)
	}
	if _, err := s.History(t.Context(), "not an address"); err == nil {
		t.Error("History of an invalid address: want an error")
	}
}

func mustPutCtx(t *testing.T, ctx context.Context, s Store, k Key) {
	t.Helper()
	if err := s.Put(ctx, k); err != nil {
		t.Fatalf("Put(%s): %v", k.Fingerprint, err)
	}
}

func testHistoryRejectedPut(t *testing.T, s Store) {
	bad := fakeKey(1, "a@example.org", "no at sign")
	if err := s.Put(t.Context(), bad); err == nil {
		t.Fatal("Put of a bad address: want an error")
	}
	if err := s.Remove(t.Context(), fakeKey(1).Fingerprint); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Remove of a missing key: err = %v", err)
	}
	checkHistory(t, s, "a@example.org", nil, time.Time{}, time.Now())
}

func testKeyID(t *testing.T, s Store) {
	ctx := t.Context()
	v4 := fakeKey(0xabc, "v4@example.org")
	v6 := fakeKey(6, "v6@example.org")
	v6.Fingerprint = "CB186C4F0609A697E4D52DFA6C722B0C1F1E27C18A56708F6525EC27BAD9ACC9"
	x509 := fakeKey(0x5abc, "x@example.org")
	x509.Kind = KindX509
	twin := fakeKey(0xabc) // same low 64 bits as v4, other high bits
	twin.Fingerprint = "1" + v4.Fingerprint[1:]
	for _, k := range []Key{v4, v6, x509, twin} {
		mustPut(t, s, k)
	}

	cases := map[string][]string{
		"0000000000000ABC":    {v4.Fingerprint, twin.Fingerprint},
		"0x0000000000000abc":  {v4.Fingerprint, twin.Fingerprint},
		"0000 0000 0000 0abc": {v4.Fingerprint, twin.Fingerprint},
		"cb186c4f0609a697":    {v6.Fingerprint}, // v6: the first 16 hex digits
		"6525EC27BAD9ACC9":    {},               // not the last 16 of a v6
		"0000000000005ABC":    {},               // X.509 certificates have no key ID
		"FFFFFFFFFFFFFFFF":    {},
	}
	for id, want := range cases {
		keys, err := s.LookupKeyID(ctx, id)
		if err != nil || keys == nil || !slices.Equal(fingerprints(keys), want) {
			t.Errorf("LookupKeyID(%q) = %v, %v; want %v", id, fingerprints(keys), err, want)
		}
	}
	if keys, _ := s.LookupKeyID(ctx, "cb186c4f0609a697"); len(keys) == 1 && !slices.Equal(keys[0].Addresses, []string{"v6@example.org"}) {
		t.Errorf("LookupKeyID key addresses = %q; want all of the key's", keys[0].Addresses)
	}
	for _, bad := range []string{"", "ABC", "0000000000000ABCD", "000000000000000G"} {
		if _, err := s.LookupKeyID(ctx, bad); err == nil {
			t.Errorf("LookupKeyID(%q): want an error", bad)
		}
	}
	if err := s.Remove(ctx, v4.Fingerprint); err != nil {
		t.Fatal(err)
	}
	twin.Kind = KindX509 // a change of kind drops the key ID too
	mustPut(t, s, twin)
	if keys, err := s.LookupKeyID(ctx, "0000000000000ABC"); err != nil || len(keys) != 0 {
		t.Errorf("LookupKeyID after Remove and kind change = %v, %v; want nothing", fingerprints(keys), err)
	}
}

// joeHash is the draft's example: the WKD hash of "joe.doe".
const joeHash = "iy9q119eutrkn8s1mk4r39qejnbu3n5q"

func testLookupWKD(t *testing.T, s Store) {
	ctx := t.Context()
	mustPut(t, s, fakeKey(1, "Joe.Doe@Example.ORG", "joe.doe@other.example", "x@example.org"))
	mustPut(t, s, fakeKey(2, "joe.doe@example.org"))
	mustPut(t, s, fakeKey(3, "joe.doe@example.org.evil.example", "jane@example.org"))

	type result struct {
		fpr   string
		addrs string
	}
	check := func(domain, hash string, want ...result) {
		t.Helper()
		keys, err := s.LookupWKD(ctx, domain, hash)
		if err != nil || keys == nil {
			t.Fatalf("LookupWKD(%s, %s) = %v, %v", domain, hash, keys, err)
		}
		var got []result
		for _, k := range keys {
			got = append(got, result{k.Fingerprint, strings.Join(k.Addresses, " ")})
		}
		if !slices.Equal(got, want) {
			t.Errorf("LookupWKD(%s, %s) = %v; want %v", domain, hash, got, want)
		}
	}
	joe := "joe.doe@example.org"
	check("example.org", joeHash, result{fakeKey(1).Fingerprint, joe}, result{fakeKey(2).Fingerprint, joe})
	check("Example.ORG.", joeHash, result{fakeKey(1).Fingerprint, joe}, result{fakeKey(2).Fingerprint, joe})
	check("other.example", joeHash, result{fakeKey(1).Fingerprint, "joe.doe@other.example"})
	check("example.org", "kei1q4tipxxu1yj79k9kfukdhfy631xe") // hash of "bob": nothing
	check("org", joeHash)
	check("evil.example", joeHash)

	mustPut(t, s, fakeKey(2, "jane@example.org")) // the update drops joe from key 2
	check("example.org", joeHash, result{fakeKey(1).Fingerprint, joe})
	if _, err := s.LookupWKD(ctx, "bad domain", joeHash); err == nil {
		t.Error("LookupWKD of an invalid domain: want an error")
	}
}

// testConcurrentSameKey puts and removes one key from many goroutines:
// every call succeeds (or finds nothing to remove), and the history has
// one event per change.
func testConcurrentSameKey(t *testing.T, s Store) {
	const workers, rounds = 6, 10
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		changes int
	)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				var err error
				if w%3 == 2 && i%2 == 1 {
					err = s.Remove(t.Context(), fakeKey(1).Fingerprint)
					if errors.Is(err, ErrNotFound) {
						continue
					}
				} else {
					k := fakeKey(1, "same@example.org", fmt.Sprintf("w%d@example.org", w))
					err = s.Put(t.Context(), k)
				}
				if err != nil {
					t.Errorf("worker %d round %d: %v", w, i, err)
					return
				}
				mu.Lock()
				changes++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	events, err := s.History(t.Context(), "same@example.org")
	if err != nil || len(events) != changes {
		t.Fatalf("History = %d events, %v; want %d", len(events), err, changes)
	}
	// Each import follows nothing or a remove; each update or remove follows an import or update.
	present := false
	for i, e := range events {
		switch {
		case e.Action == ActionImport && !present, e.Action == ActionUpdate && present:
			present = true
		case e.Action == ActionRemove && present:
			present = false
		default:
			t.Fatalf("event %d is %s with the key present=%v: history out of step", i, e.Action, present)
		}
	}
}
