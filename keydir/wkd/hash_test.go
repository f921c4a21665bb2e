package wkd

import (
	"os/exec"
	"strings"
	"testing"
)

func TestHashDraftVector(t *testing.T) {
	// draft-koch-openpgp-webkey-service §3.1 example.
	if got := Hash("Joe.Doe"); got != "iy9q119eutrkn8s1mk4r39qejnbu3n5q" {
		t.Fatalf("Hash(Joe.Doe) = %s", got)
	}
	u, err := ForAddress("Joe.Doe@Example.ORG")
	if err != nil {
		t.Fatal(err)
	}
	if u.Direct != "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe" {
		t.Errorf("direct URL %s", u.Direct)
	}
	if u.Advanced != "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe" {
		t.Errorf("advanced URL %s", u.Advanced)
	}
}

func TestForAddressRejectsNonAddresses(t *testing.T) {
	for _, a := range []string{"", "nobody", "@example.org", "joe@"} {
		if _, err := ForAddress(a); err == nil {
			t.Errorf("ForAddress(%q) succeeded", a)
		}
	}
}

// GnuPG's own tool computes the same hash (gpg-wks-client is part of gnupg).
func TestHashAgreesWithGnuPG(t *testing.T) {
	addrs := []string{"Joe.Doe@Example.ORG", "alice@example.com", "A.B-C_d+tag@example.net", "x@y.example", "MiXeD.CaSe@Example.Org"}
	for _, a := range addrs {
		out, err := exec.Command(gpgWKSClient, "--print-wkd-hash", a).Output()
		if err != nil {
			t.Fatalf("gpg-wks-client --print-wkd-hash %s: %v", a, err)
		}
		gpgHash := strings.Fields(string(out))[0]
		local := a[:strings.LastIndexByte(a, '@')]
		if got := Hash(local); got != gpgHash {
			t.Errorf("%s: Hash = %s, gpg-wks-client = %s", a, got, gpgHash)
		}
	}
}

// Debian installs gpg-wks-client (package gpg-wks-client) outside PATH.
const gpgWKSClient = "/usr/lib/gnupg/gpg-wks-client"

func BenchmarkHash(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if len(Hash("Joe.Doe")) != 32 {
			b.Fatal("bad hash")
		}
	}
}
