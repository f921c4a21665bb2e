package httpd

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/keydir/wkd"
	"github.com/sealgate/sealgate/pgp"
)

const wkdPrefix = "/.well-known/openpgpkey/"

// Limits of a WKD answer. GnuPG imports at most 5 keys from one answer
// and refuses answers over 256 KiB (g10/import.c, MAX_WKD_RESULT_LENGTH in
// g10/call-dirmngr.c); Mailvelope has the same size cap.
const (
	MaxWKDKeys  = 5
	MaxWKDBytes = 256 << 10
)

// PolicyFile is the body of every policy file (draft "Policy Flags"). It declares
// no flags: this directory has no Web Key Service submission. GnuPG's
// parser wants every line to end in LF (tools/wks-util.c), and a comment
// line is valid syntax.
const PolicyFile = "# Web Key Directory policy: keys are published by the domain's administrators.\n"

// zbase32Alphabet is the alphabet of WKD hashes (draft §3.1, RFC 6189 §5.1.6).
const zbase32Alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"

// ErrNoWKDKey is returned by WKDAnswer when no key can be served.
var ErrNoWKDKey = errors.New("httpd: no key to serve over WKD")

// wkdRequest is a parsed WKD path.
type wkdRequest struct {
	domain string // normalised and configured
	hash   string // "" for the policy file
}

// serveWKD answers both WKD methods. Everything that is not a configured
// domain with a well-formed hash gets the same 404 as an address without
// a key, so a client learns nothing beyond what WKD itself reveals
// (reliability K4). The ?l= parameter is ignored: clients disagree about
// its case and escaping, and some leave it out (draft §3.1).
func (s *server) serveWKD(w http.ResponseWriter, r *http.Request) {
	req, ok := s.parseWKD(r)
	if !ok {
		plainError(w, http.StatusNotFound, "not found")
		return
	}
	if req.hash == "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(PolicyFile))
		return
	}
	keys, err := s.store.LookupWKD(r.Context(), req.domain, req.hash)
	if err != nil {
		s.logger(r).Error("WKD lookup failed", "domain", req.domain, "err", err)
		plainError(w, http.StatusInternalServerError, "internal server error")
		return
	}
	body, err := wkdAnswer(keys, req.domain, req.hash, s.now(), s.wkdCache)
	if errors.Is(err, ErrNoWKDKey) {
		plainError(w, http.StatusNotFound, "not found")
		return
	}
	if err != nil {
		s.logger(r).Error("WKD answer failed", "domain", req.domain, "err", err)
		plainError(w, http.StatusInternalServerError, "internal server error")
		return
	}
	// Draft §3.1: the binary key, preferably as application/octet-stream
	// (Proton refuses armor; Thunderbird refuses text/html).
	serveBytes(w, r, "application/octet-stream", body)
}

// serveBytes writes body with an ETag; http.ServeContent answers HEAD and
// If-None-Match (304) from it.
func serveBytes(w http.ResponseWriter, r *http.Request, contentType string, body []byte) {
	sum := sha256.Sum256(body)
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("ETag", `"`+base64.RawURLEncoding.EncodeToString(sum[:18])+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// parseWKD maps the path to a domain and hash:
//
//	hu/{hash}, policy                    direct method: the domain is the Host
//	{domain}/hu/{hash}, {domain}/policy  advanced method: the domain is in the path
//
// For the advanced method the Host header is not checked: clients send
// openpgpkey.{domain}, a reverse proxy may send its upstream's name, and
// Mailvelope sends the bare domain; the answer is the same public key in
// every case. The direct method has only the Host to go by, so a proxy
// must pass it on (nginx: proxy_set_header Host $host).
func (s *server) parseWKD(r *http.Request) (wkdRequest, bool) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, wkdPrefix), "/")
	var domain, hash string
	policy := parts[len(parts)-1] == "policy"
	switch {
	case len(parts) == 1 && policy:
		domain = hostOnly(r.Host)
	case len(parts) == 2 && policy:
		domain = parts[0]
	case len(parts) == 2 && parts[0] == "hu":
		domain, hash = hostOnly(r.Host), parts[1]
	case len(parts) == 3 && parts[1] == "hu":
		domain, hash = parts[0], parts[2]
	default:
		return wkdRequest{}, false
	}
	if !policy && !ValidWKDHash(hash) {
		return wkdRequest{}, false
	}
	d, ok := normalizeDomain(domain)
	if !ok || !s.domains[d] {
		return wkdRequest{}, false
	}
	return wkdRequest{domain: d, hash: hash}, true
}

// hostOnly strips the port from a Host header value.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// ValidWKDHash reports whether h is a WKD hash: exactly 32 characters of
// the z-base-32 alphabet (lower case; 160 bits of SHA-1, draft §3.1).
func ValidWKDHash(h string) bool {
	if len(h) != 32 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if strings.IndexByte(zbase32Alphabet, h[i]) < 0 {
			return false
		}
	}
	return true
}

// wkdCandidate is one key that may go into a WKD answer.
type wkdCandidate struct {
	fingerprint string
	data        []byte // the key reduced to the matching user IDs
	usable      bool   // can be encrypted to now
	updated     time.Time
}

// WKDAnswer builds the body of a WKD answer for domain and hash from keys
// (what Store.LookupWKD returns, or any superset): every OpenPGP key with
// an address in domain whose local part hashes to hash, reduced to the
// user IDs of that address with their self-signatures (draft, Security
// Considerations: all other user IDs MUST be removed), as concatenated
// binary keyblocks. Keys usable
// for encryption come first (GnuPG returns the first key's fingerprint),
// newest first; revoked and expired keys follow, so clients learn of them
// (draft §3.1 allows them). At most MaxWKDKeys keys, and no more than
// MaxWKDBytes unless the first key alone is larger. ErrNoWKDKey when
// nothing matches.
func WKDAnswer(keys []keydir.Key, domain, hash string, now time.Time) ([]byte, error) {
	return wkdAnswer(keys, domain, hash, now, nil)
}

// wkdAnswer is WKDAnswer with a cache of reduced keys (nil: none).
func wkdAnswer(keys []keydir.Key, domain, hash string, now time.Time, cache *candidateCache) ([]byte, error) {
	var cands []wkdCandidate
	for _, k := range keys {
		c, ok, err := cache.candidate(k, domain, hash, now)
		if err != nil {
			return nil, err
		}
		if ok {
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		return nil, ErrNoWKDKey
	}
	slices.SortFunc(cands, func(a, b wkdCandidate) int {
		if a.usable != b.usable {
			if a.usable {
				return -1
			}
			return 1
		}
		return cmp.Or(b.updated.Compare(a.updated), strings.Compare(a.fingerprint, b.fingerprint))
	})
	var out []byte
	for i, c := range cands {
		if i == MaxWKDKeys || (i > 0 && len(out)+len(c.data) > MaxWKDBytes) {
			break
		}
		out = append(out, c.data...)
	}
	return out, nil
}

// wkdCandidateOf reduces k to its user IDs for the addresses in domain
// whose local part hashes to hash; ok is false when it has none.
func wkdCandidateOf(k keydir.Key, domain, hash string, now time.Time) (wkdCandidate, bool, error) {
	var addrs []string
	for _, a := range k.Addresses {
		at := strings.LastIndexByte(a, '@')
		if at > 0 && a[at+1:] == domain && wkd.Hash(a[:at]) == hash {
			addrs = append(addrs, a)
		}
	}
	if k.Kind != keydir.KindPGP || len(addrs) == 0 {
		return wkdCandidate{}, false, nil
	}
	cert, err := readStoredCert(k)
	if err != nil {
		return wkdCandidate{}, false, err
	}
	data, err := cert.WithUserIDs(func(email string) bool {
		n, err := keydir.NormalizeAddress(email)
		return err == nil && slices.Contains(addrs, n)
	})
	if errors.Is(err, pgp.ErrNoMatchingUserID) {
		// The index and the certificate disagree (a user ID revoked
		// since); serve nothing rather than a key without the address.
		return wkdCandidate{}, false, nil
	}
	if err != nil {
		return wkdCandidate{}, false, err
	}
	c := wkdCandidate{fingerprint: k.Fingerprint, data: data, usable: cert.CheckEncryption(now) == nil, updated: k.Updated}
	return c, true, nil
}

// readStoredCert parses the one certificate of a stored OpenPGP key.
func readStoredCert(k keydir.Key) (*pgp.Cert, error) {
	certs, err := pgp.ReadCerts(bytes.NewReader(k.Data), int64(len(k.Data))+1)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, errors.New("httpd: stored key " + k.Fingerprint + " holds more than one certificate")
	}
	return certs[0], nil
}
