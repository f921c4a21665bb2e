package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// normalizeDomain checks a domain name and returns it in the form sealgate
// compares domains in: lower-case ASCII, internationalised labels as IDNA
// A-labels ("xn--…"), the form DNS and the WKD host openpgpkey.<domain> use.
func normalizeDomain(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New("domain must not be empty")
	case strings.Contains(s, "*"):
		return "", fmt.Errorf(`%q: a wildcard is allowed only as a whole policy match ("*") or its first label ("*.example.org")`, s)
	case strings.HasSuffix(s, "."):
		return "", fmt.Errorf("%q: write the domain without a trailing dot", s)
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return "", fmt.Errorf("%q is an IP address, not a domain name", s)
	}
	// MapForLookup lower-cases and applies the STD3 rules (letters, digits,
	// hyphens); VerifyDNSLength enforces 63-byte labels and 253-byte names
	// (RFC 1035 §2.3.4).
	profile := idna.New(idna.MapForLookup(), idna.BidiRule(), idna.VerifyDNSLength(true), idna.Transitional(false))
	ascii, err := profile.ToASCII(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a valid domain name: %v", s, err)
	}
	return strings.ToLower(ascii), nil
}

const matchForms = `"*", "example.org", "*.example.org" or "alice@example.org"`

// normalizeMatch checks a policy match and normalises its domain.
func normalizeMatch(s string) (string, error) {
	switch {
	case s == "":
		return "", fmt.Errorf("missing; must be %s", matchForms)
	case s == "*":
		return s, nil
	case strings.HasPrefix(s, "*."):
		domain, err := normalizeDomain(s[2:])
		if err != nil {
			return "", fmt.Errorf("must be %s: %v", matchForms, err)
		}
		return "*." + domain, nil
	case strings.Contains(s, "@"):
		at := strings.LastIndexByte(s, '@')
		local, domain := s[:at], s[at+1:]
		if err := checkLocalPart(local); err != nil {
			return "", fmt.Errorf("must be %s: %q: %v", matchForms, s, err)
		}
		norm, err := normalizeDomain(domain)
		if err != nil {
			return "", fmt.Errorf("must be %s: %v", matchForms, err)
		}
		return local + "@" + norm, nil
	default:
		domain, err := normalizeDomain(s)
		if err != nil {
			return "", fmt.Errorf("must be %s: %v", matchForms, err)
		}
		return domain, nil
	}
}

// checkLocalPart accepts a dot-atom local part (RFC 5322 §3.2.3), UTF-8
// allowed (RFC 6531). Quoted local parts are not supported in policy.
func checkLocalPart(local string) error {
	switch {
	case local == "":
		return errors.New("the part before @ is empty")
	case local == "*":
		return errors.New(`a wildcard local part is not supported; match the domain ("example.org") instead`)
	case len(local) > 64: // RFC 5321 §4.5.3.1.1
		return errors.New("the part before @ is longer than 64 bytes")
	case strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, ".."):
		return errors.New("the part before @ has a leading, trailing or doubled dot")
	}
	if i := strings.IndexFunc(local, func(r rune) bool {
		return isSpaceOrControl(r) || strings.ContainsRune(`"(),:;<>@[\]`, r)
	}); i >= 0 {
		return fmt.Errorf("the part before @ contains %q, which needs quoting in an address; quoted local parts are not supported", local[i:i+1])
	}
	return nil
}

// covers reports whether every recipient that normalised match later matches
// is already matched by earlier. Matching follows the policy semantics: "*"
// matches everyone, "*.example.org" only subdomains of example.org, a domain
// exactly that domain, an address exactly that address (case-insensitively).
func covers(earlier, later string) bool {
	if earlier == "*" || strings.EqualFold(earlier, later) {
		return true
	}
	parent, wildcard := strings.CutPrefix(earlier, "*.")
	switch {
	case later == "*":
		return false
	case strings.HasPrefix(later, "*."):
		return wildcard && strings.HasSuffix(later[2:], "."+parent)
	case strings.Contains(later, "@"):
		domain := later[strings.LastIndexByte(later, '@')+1:]
		return earlier == domain || wildcard && strings.HasSuffix(domain, "."+parent)
	default:
		return wildcard && strings.HasSuffix(later, "."+parent)
	}
}
