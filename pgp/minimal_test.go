package pgp

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// multiUIDCert is a certificate with user IDs one@, two@ (twice, with
// different names) and a name-only user ID, where a third party has
// certified "Two <two@example.org>". It is parsed with go-crypto directly,
// not through ReadCerts, so the third-party certification is still there.
func multiUIDCert(t *testing.T) *Cert {
	t.Helper()
	now := time.Now().Add(-time.Hour)
	cfg := keyConfig(kindCv25519, now) // gpg 2.2 reads legacy EdDSA, not RFC 9580 Ed25519
	e, err := openpgp.NewEntity("One", "", "one@example.org", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range [][2]string{{"Two", "two@example.org"}, {"Two Work", "two@example.org"}} {
		if err := e.AddUserId(uid[0], "", uid[1], cfg); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.AddUserId("No Address", "", "", cfg); err != nil {
		t.Fatal(err)
	}
	other := newKey(t, kindCv25519, now)
	if err := e.SignIdentity("Two <two@example.org>", other, cfg); err != nil {
		t.Fatal(err)
	}
	parsed, err := openpgp.ReadEntity(packet.NewReader(bytes.NewReader(publicBytes(t, e))))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(parsed.Identities["Two <two@example.org>"].Signatures); n != 2 {
		t.Fatalf("fixture: %d signatures on Two's user ID, want self + third party", n)
	}
	return &Cert{Entity: parsed}
}

func TestForAddressKeepsOnlyMatchingUserIDs(t *testing.T) {
	c := multiUIDCert(t)
	b, err := c.ForAddress("Two@Example.ORG")
	if err != nil {
		t.Fatal(err)
	}
	got, err := openpgp.ReadEntity(packet.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatalf("result does not parse: %v", err)
	}
	var names []string
	for name, id := range got.Identities {
		names = append(names, name)
		for _, sig := range id.Signatures {
			if !sig.CheckKeyIdOrFingerprint(got.PrimaryKey) {
				t.Errorf("user ID %q keeps a third-party signature by %X", name, *sig.IssuerKeyId)
			}
		}
	}
	if len(names) != 2 || got.Identities["Two <two@example.org>"] == nil || got.Identities["Two Work <two@example.org>"] == nil {
		t.Errorf("user IDs %q, want only the two for two@example.org", names)
	}
	if len(got.Subkeys) != len(c.Entity.Subkeys) || len(got.Subkeys) == 0 {
		t.Errorf("%d subkeys, want %d", len(got.Subkeys), len(c.Entity.Subkeys))
	}
	if !bytes.Equal(got.PrimaryKey.Fingerprint, c.Entity.PrimaryKey.Fingerprint) {
		t.Error("primary key changed")
	}
}

func TestForAddressNoMatch(t *testing.T) {
	c := multiUIDCert(t)
	for _, addr := range []string{"three@example.org", "two@example.net", "No Address", ""} {
		if _, err := c.ForAddress(addr); !errors.Is(err, ErrNoMatchingUserID) {
			t.Errorf("ForAddress(%q): err %v, want ErrNoMatchingUserID", addr, err)
		}
	}
}

func TestForAddressKeepsRevocations(t *testing.T) {
	e := newKey(t, kindX25519, time.Now().Add(-time.Hour))
	if err := e.RevokeKey(packet.KeyCompromised, "lost", nil); err != nil {
		t.Fatal(err)
	}
	b, err := certOf(t, e).ForAddress("x25519@example.org")
	if err != nil {
		t.Fatal(err)
	}
	got, err := openpgp.ReadEntity(packet.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Revoked(time.Now()) {
		t.Error("the key revocation was dropped")
	}
}

func TestWithUserIDsDeterministic(t *testing.T) {
	c := multiUIDCert(t)
	keep := func(email string) bool { return strings.HasSuffix(email, "@example.org") }
	first, err := c.WithUserIDs(keep)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		again, err := c.WithUserIDs(keep)
		if err != nil || !bytes.Equal(again, first) {
			t.Fatalf("output differs between calls (err %v)", err)
		}
	}
}

// TestForAddressGPGImport checks with GnuPG that the result is a valid
// certificate carrying only the requested user ID.
func TestForAddressGPGImport(t *testing.T) {
	c := multiUIDCert(t)
	b, err := c.ForAddress("one@example.org")
	if err != nil {
		t.Fatal(err)
	}
	g := newGPG(t)
	g.run(t, "--import", writeFile(t, g.dir, "key.gpg", b))
	out := string(g.run(t, "--with-colons", "--list-keys", c.Fingerprint()))
	var uids, subs int
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Split(line, ":")
		switch f[0] {
		case "uid":
			uids++
			if len(f) < 10 || f[9] != "One <one@example.org>" {
				t.Errorf("unexpected user ID line %q", line)
			}
		case "sub":
			subs++
		}
	}
	if uids != 1 || subs != len(c.Entity.Subkeys) {
		t.Errorf("gpg sees %d user IDs and %d subkeys, want 1 and %d:\n%s", uids, subs, len(c.Entity.Subkeys), out)
	}
}
