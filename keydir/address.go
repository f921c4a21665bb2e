package keydir

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// RFC 5321 §4.5.3.1: size limits, in octets, of the parts of an address.
const (
	maxLocalPartLen = 64
	maxDomainLen    = 255
	// §4.5.3.1.3: a path is at most 256 octets including "<" and ">".
	maxAddressLen = 254
	// RFC 1035 §2.3.4.
	maxLabelLen = 63
)

// NormalizeAddress returns the form addresses are indexed and looked up by.
//
// The policy (reliability reference K2): the input must be a bare addr-spec,
// optionally in angle brackets, with exactly one '@' (so quoted local parts
// that contain '@' are refused rather than guessed at). The local part is
// lower-cased, Unicode aware, as WKD does (draft-koch-openpgp-webkey-service
// §3.1); the domain is lower-cased, stripped of a trailing dot and converted
// to A-labels with the UTS #46 lookup profile, so "Bücher.Example" and
// "xn--bcher-kva.example" are the same domain. Matching on the result is
// exact: there is no substring or sub-domain matching anywhere.
func NormalizeAddress(addr string) (string, error) {
	a, err := stripAddress(addr)
	if err != nil {
		return "", err
	}
	at := strings.LastIndexByte(a, '@')
	local, domain := a[:at], a[at+1:]
	if local == "" {
		return "", fmt.Errorf("keydir: address %q: empty local part", addr)
	}
	if r, ok := foldsToASCII(local); ok {
		return "", fmt.Errorf("keydir: address %q: %U lower-cases to an ASCII letter and could stand for another address", addr, r)
	}
	local = strings.ToLower(local)
	if len(local) > maxLocalPartLen {
		return "", fmt.Errorf("keydir: address %q: local part is longer than %d octets", addr, maxLocalPartLen)
	}
	domain, err = normalizeDomain(domain)
	if err != nil {
		return "", fmt.Errorf("keydir: address %q: %w", addr, err)
	}
	out := local + "@" + domain
	if len(out) > maxAddressLen {
		return "", fmt.Errorf("keydir: address %q: longer than %d octets", addr, maxAddressLen)
	}
	return out, nil
}

// stripAddress trims spaces and one pair of angle brackets and checks the
// characters: valid UTF-8, no controls, no spaces, no stray brackets and
// exactly one '@'.
func stripAddress(addr string) (string, error) {
	a := strings.TrimSpace(addr)
	if strings.HasPrefix(a, "<") && strings.HasSuffix(a, ">") {
		a = strings.TrimSpace(a[1 : len(a)-1])
	}
	if a == "" {
		return "", errors.New("keydir: empty address")
	}
	if !utf8.ValidString(a) {
		return "", fmt.Errorf("keydir: address %q: invalid UTF-8", addr)
	}
	for _, r := range a {
		switch {
		case unicode.IsControl(r):
			return "", fmt.Errorf("keydir: address %q: contains a control character", addr)
		case unicode.IsSpace(r):
			return "", fmt.Errorf("keydir: address %q: contains a space", addr)
		case r == '<' || r == '>':
			return "", fmt.Errorf("keydir: address %q: unbalanced angle brackets", addr)
		}
	}
	if n := strings.Count(a, "@"); n != 1 {
		return "", fmt.Errorf("keydir: address %q: want exactly one '@', found %d", addr, n)
	}
	return a, nil
}

// normalizeDomain lower-cases domain, drops one trailing dot and converts it
// to A-labels (RFC 5890 §2.3.2.1).
func normalizeDomain(domain string) (string, error) {
	d := strings.TrimSuffix(strings.ToLower(domain), ".")
	if d == "" {
		return "", errors.New("empty domain")
	}
	if strings.HasPrefix(d, "[") {
		// RFC 5321 §4.1.3 address literals name no key directory domain.
		return "", errors.New("address literals are not supported")
	}
	ascii, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("invalid domain: %w", err)
	}
	if len(ascii) > maxDomainLen {
		return "", fmt.Errorf("domain is longer than %d octets", maxDomainLen)
	}
	for label := range strings.SplitSeq(ascii, ".") {
		if label == "" {
			return "", errors.New("domain has an empty label")
		}
		if len(label) > maxLabelLen {
			return "", fmt.Errorf("domain label is longer than %d octets", maxLabelLen)
		}
	}
	return ascii, nil
}

// foldsToASCII finds a non-ASCII character whose lower case is ASCII, such
// as U+212A KELVIN SIGN ("k"): folding it would let a user ID with it
// stand for someone else's plain-ASCII address (the WKD case-folding
// divergence; GnuPG leaves it alone). Such addresses are refused.
func foldsToASCII(s string) (rune, bool) {
	for _, r := range s {
		if r >= utf8.RuneSelf && unicode.ToLower(r) < utf8.RuneSelf {
			return r, true
		}
	}
	return 0, false
}
