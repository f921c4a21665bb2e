// Package wkd computes Web Key Directory names
// (draft-koch-openpgp-webkey-service §3.1).
package wkd

import (
	"crypto/sha1"
	"encoding/base32"
	"errors"
	"net/url"
	"strings"
)

// z-base-32 (draft §3.1 cites it) uses the RFC 4648 bit order with its own alphabet.
var zbase32 = base32.NewEncoding("ybndrfg8ejkmcpqxot1uwisza345h769").WithPadding(base32.NoPadding)

// Hash returns the WKD hash of an address's local part: z-base-32 of the
// SHA-1 of the local part with ASCII letters mapped to lower case. The
// draft maps only A–Z; other characters are hashed as they are.
func Hash(localPart string) string {
	sum := sha1.Sum([]byte(asciiLower(localPart)))
	return zbase32.EncodeToString(sum[:])
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// URLs are the two places a client looks for an address's key.
type URLs struct {
	Hash     string
	Advanced string // https://openpgpkey.DOMAIN/.well-known/openpgpkey/DOMAIN/hu/HASH?l=LOCAL
	Direct   string // https://DOMAIN/.well-known/openpgpkey/hu/HASH?l=LOCAL
}

// ForAddress splits address at its last '@' and returns its hash and URLs.
// The domain is lower-cased; the l= parameter carries the local part as
// written (percent-encoded).
func ForAddress(address string) (URLs, error) {
	at := strings.LastIndexByte(address, '@')
	if at <= 0 || at == len(address)-1 {
		return URLs{}, errors.New("wkd: address must be local@domain")
	}
	local, domain := address[:at], strings.ToLower(address[at+1:])
	h := Hash(local)
	q := "?l=" + url.QueryEscape(local)
	return URLs{
		Hash:     h,
		Advanced: "https://openpgpkey." + domain + "/.well-known/openpgpkey/" + domain + "/hu/" + h + q,
		Direct:   "https://" + domain + "/.well-known/openpgpkey/hu/" + h + q,
	}, nil
}
