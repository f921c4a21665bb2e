package httpd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/pgp"
)

// The keyserver routes (VKS as keys.openpgp.org defines it, and the HKP
// subset GnuPG and Thunderbird use) publish exactly what WKD publishes:
// keys with an address in a configured domain, carrying only the user IDs
// of configured domains. The directory also holds correspondents' keys
// for the gateway's own use; those are never served, and neither is the
// fact that they are there.

func (s *server) routeKeyserver(mux *http.ServeMux) {
	notFound := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		plainError(w, http.StatusNotFound, "not found")
	})
	mux.Handle("/vks/v1/by-email/{address}", public(s.lookupHandler(func(r *http.Request) (search, error) {
		return parseEmailSearch(r.PathValue("address"))
	})))
	mux.Handle("/vks/v1/by-fingerprint/{fpr}", public(s.lookupHandler(func(r *http.Request) (search, error) {
		return parseHexSearch(r.PathValue("fpr"), 40, 64)
	})))
	mux.Handle("/vks/v1/by-keyid/{keyid}", public(s.lookupHandler(func(r *http.Request) (search, error) {
		return parseHexSearch(r.PathValue("keyid"), 16)
	})))
	mux.Handle("/vks/", public(notFound))
	mux.Handle("/pks/lookup", public(http.HandlerFunc(s.hkpLookup)))
	mux.Handle("/pks/", public(notFound))
}

// search is a parsed lookup: by a normalised address, an upper-case
// fingerprint or an upper-case long key ID.
type search struct {
	address, fingerprint, keyID string
}

var errBadSearch = errors.New("malformed search")

// parseEmailSearch takes an address, optionally in angle brackets.
func parseEmailSearch(v string) (search, error) {
	a, err := keydir.NormalizeAddress(v)
	if err != nil {
		return search{}, errBadSearch
	}
	return search{address: a}, nil
}

// parseHexSearch takes a fingerprint (40 hex digits for v4, 64 for v6)
// or a long key ID (16), in either case, with or without "0x". Short key
// IDs are refused: they are trivial to collide.
func parseHexSearch(v string, lengths ...int) (search, error) {
	h := strings.ToUpper(strings.TrimPrefix(strings.TrimPrefix(v, "0x"), "0X"))
	if !slices.Contains(lengths, len(h)) || strings.Trim(h, "0123456789ABCDEF") != "" {
		return search{}, errBadSearch
	}
	if len(h) == 16 {
		return search{keyID: h}, nil
	}
	return search{fingerprint: h}, nil
}

// lookupHandler answers a VKS route: the armored keys, 400 when parse
// fails, 404 when nothing is published.
func (s *server) lookupHandler(parse func(*http.Request) (search, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := parse(r)
		if err != nil {
			plainError(w, http.StatusBadRequest, "malformed address, fingerprint or key ID")
			return
		}
		pubs, ok := s.findPublished(w, r, q)
		if ok {
			s.serveArmored(w, r, pubs)
		}
	})
}

// published is a key as the keyserver routes serve it.
type published struct {
	cert *pgp.Cert
	data []byte // binary, only the user IDs of configured domains
}

// findPublished looks q up and writes the 404 or 500 itself when it
// returns false.
func (s *server) findPublished(w http.ResponseWriter, r *http.Request, q search) ([]published, bool) {
	keys, err := s.find(r.Context(), q)
	if err != nil {
		s.logger(r).Error("keyserver lookup failed", "err", err)
		plainError(w, http.StatusInternalServerError, "internal server error")
		return nil, false
	}
	var pubs []published
	for _, k := range keys {
		p, ok, err := s.publish(k)
		if err != nil {
			s.logger(r).Error("stored key unreadable", "fingerprint", k.Fingerprint, "err", err)
			continue
		}
		if ok {
			pubs = append(pubs, p)
		}
	}
	if len(pubs) == 0 {
		plainError(w, http.StatusNotFound, "no key found")
		return nil, false
	}
	return pubs, true
}

func (s *server) find(ctx context.Context, q search) ([]keydir.Key, error) {
	switch {
	case q.address != "":
		if !s.domains[domainOf(q.address)] {
			return nil, nil
		}
		return s.store.Lookup(ctx, q.address)
	case q.keyID != "":
		return s.store.LookupKeyID(ctx, q.keyID)
	case q.fingerprint != "":
		k, err := s.store.Get(ctx, q.fingerprint)
		if errors.Is(err, keydir.ErrNotFound) {
			return nil, nil
		}
		return []keydir.Key{k}, err
	}
	return nil, nil
}

// publish reduces k to the user IDs of configured domains; ok is false
// when it has none (or is not an OpenPGP key).
func (s *server) publish(k keydir.Key) (published, bool, error) {
	if k.Kind != keydir.KindPGP {
		return published{}, false, nil
	}
	cert, err := readStoredCert(k)
	if err != nil {
		return published{}, false, err
	}
	data, err := cert.WithUserIDs(s.inDomains)
	if errors.Is(err, pgp.ErrNoMatchingUserID) {
		return published{}, false, nil
	}
	if err != nil {
		return published{}, false, err
	}
	return published{cert: cert, data: data}, true, nil
}

// inDomains reports whether a user ID's address is in a configured domain.
func (s *server) inDomains(email string) bool {
	a, err := keydir.NormalizeAddress(email)
	return err == nil && s.domains[domainOf(a)]
}

// serveArmored writes the keys as one "PGP PUBLIC KEY BLOCK" (RFC 9580
// §6.2), the form VKS and HKP op=get return.
func (s *server) serveArmored(w http.ResponseWriter, r *http.Request, pubs []published) {
	var bin []byte
	for _, p := range pubs {
		bin = append(bin, p.data...)
	}
	armored, err := armorKey(bin)
	if err != nil {
		s.logger(r).Error("armor keys", "err", err)
		plainError(w, http.StatusInternalServerError, "internal server error")
		return
	}
	serveBytes(w, r, "application/pgp-keys", []byte(armored))
}

// hkpLookup answers /pks/lookup (draft-shaw-openpgp-hkp §3): op=get gives
// the armored keys, op=index the machine-readable index (the "mr" format
// is always used, as keys.openpgp.org does). Other operations get 501 as
// the draft asks. Search is an address or a 0x-prefixed fingerprint or
// long key ID; free-text search is not offered (it would let anyone list
// the directory), so it finds nothing.
func (s *server) hkpLookup(w http.ResponseWriter, r *http.Request) {
	params := r.URL.Query()
	op := params.Get("op")
	switch op {
	case "get", "index":
	case "":
		plainError(w, http.StatusBadRequest, "missing op")
		return
	default:
		plainError(w, http.StatusNotImplemented, "operation not implemented")
		return
	}
	q, err := parseHKPSearch(params.Get("search"))
	if err != nil {
		plainError(w, http.StatusBadRequest, "malformed search")
		return
	}
	pubs, ok := s.findPublished(w, r, q)
	if !ok {
		return
	}
	if op == "get" {
		s.serveArmored(w, r, pubs)
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "info:1:%d\n", len(pubs))
	for _, p := range pubs {
		writeIndexEntry(&b, p.cert.Entity, s.inDomains, s.now())
	}
	serveBytes(w, r, "text/plain; charset=utf-8", []byte(b.String()))
}

func parseHKPSearch(v string) (search, error) {
	v = strings.TrimSpace(v)
	switch {
	case v == "":
		return search{}, errBadSearch
	case strings.Contains(v, "@"):
		// "Name <address>", as gpg --search-keys may send a whole user ID.
		if lt := strings.LastIndexByte(v, '<'); lt >= 0 && strings.HasSuffix(v, ">") {
			v = v[lt:]
		}
		return parseEmailSearch(v)
	case strings.HasPrefix(v, "0x") || strings.HasPrefix(v, "0X"):
		return parseHexSearch(v, 16, 40, 64)
	}
	// Free text: a search that matches nothing.
	return search{}, nil
}

// writeIndexEntry writes the pub line and the uid lines of the published
// user IDs (draft-shaw-openpgp-hkp §5.2):
//
//	pub:<fingerprint>:<algo>:<bits>:<created>:<expires>:<flags>
//	uid:<escaped user ID>:<created>:<expires>:<flags>
func writeIndexEntry(b *strings.Builder, e *openpgp.Entity, keep func(string) bool, now time.Time) {
	pk := e.PrimaryKey
	bits, _ := pk.BitLength()
	expires, flags := "", ""
	if sig, _ := e.PrimarySelfSignature(); sig != nil && sig.KeyLifetimeSecs != nil && *sig.KeyLifetimeSecs > 0 {
		exp := pk.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second)
		expires = strconv.FormatInt(exp.Unix(), 10)
		if now.After(exp) {
			flags += "e"
		}
	}
	if e.Revoked(now) {
		flags += "r"
	}
	fmt.Fprintf(b, "pub:%X:%d:%d:%d:%s:%s\n", pk.Fingerprint, pk.PubKeyAlgo, bits, pk.CreationTime.Unix(), expires, flags)
	names := make([]string, 0, len(e.Identities))
	for name, id := range e.Identities {
		if id.UserId != nil && id.UserId.Email != "" && keep(id.UserId.Email) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		id := e.Identities[name]
		created, uflags := "", ""
		if id.SelfSignature != nil {
			created = strconv.FormatInt(id.SelfSignature.CreationTime.Unix(), 10)
		}
		if len(id.Revocations) > 0 {
			uflags = "r"
		}
		fmt.Fprintf(b, "uid:%s:%s::%s\n", hkpEscape(name), created, uflags)
	}
}

// hkpEscape percent-escapes ':' and '%', which delimit index fields, and
// every byte outside printable ASCII (draft-shaw-openpgp-hkp §5.2).
func hkpEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == ':' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
