package main

// The signature verdict of decrypt, X-Sealmail-Signature:
//
//	good         every signature verifies with a key we have (OpenPGP) or
//	             a certificate that chains to a trust anchor now with the
//	             emailProtection EKU (S/MIME), and the signer is the From
//	             address: a user ID (OpenPGP) or e-mail address (S/MIME)
//	             of the signer equals the one address of the From field
//	             (reliability.md P2)
//	mismatch     the signature is valid, but the signer is someone else
//	             than the From address, or From holds no single address;
//	             stderr names both
//	unknown-key  we have no key for the signer (OpenPGP), or the S/MIME
//	             certificate is missing or not trusted (unknown CA, expired,
//	             no emailProtection); stderr says why for S/MIME
//	bad          the check failed: tampered content, a wrong or expired
//	             key, a malformed or refused signature (0 or 2 signers,
//	             SHA-1, mismatched content-type attribute); stderr says why
//	             (not for the OpenPGP combined signature: endpoint.Decrypt
//	             does not report the cause)
//	none         no signature we verify
//
// When a message carries more than one signature (around and inside the
// encryption, or an OpenPGP combined signature over a PGP/MIME signed
// entity), the verdict is the worst of them in the order bad, mismatch,
// unknown-key, good; X-Sealmail-Signer names the signer of that one (the
// innermost on a tie). X-Sealmail-Signer is the OpenPGP primary key
// fingerprint or the SHA-256 fingerprint of the S/MIME certificate, for
// good, mismatch and bad signatures whose signer is known.
//
// A bad signature does not block the output: the message decrypted and
// its integrity held; the verdict tells the reader not to trust it.

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"os"
	"strings"

	"github.com/emersion/go-message/textproto"

	"github.com/sealgate/sealgate/pgp/endpoint"
	"github.com/sealgate/sealgate/smime"
)

// sigCheck is the outcome of one signature before the From rule.
type sigCheck struct {
	status endpoint.SignatureStatus
	signer string // fingerprint, when the signer is known
	label  string // which signature, for notes
	note   string // why it is not good, for stderr
	// addresses and hasAddress describe a known signer's identities.
	addresses  []string
	hasAddress func(address string) bool
}

// rank orders verdicts from best to worst.
var rank = map[endpoint.SignatureStatus]int{
	endpoint.SignatureNone:       0,
	endpoint.SignatureGood:       1,
	endpoint.SignatureUnknownKey: 2,
	endpoint.SignatureMismatch:   3,
	endpoint.SignatureBad:        4,
}

// combinedCheck is the OpenPGP signature endpoint.Decrypt verified.
func combinedCheck(res *endpoint.Result, now nowFunc) sigCheck {
	c := sigCheck{status: res.Signature, label: "OpenPGP signature"}
	if e := res.Signer; e != nil {
		c.signer = endpoint.Fingerprint(e)
		c.addresses = endpoint.Addresses(e, now())
		c.hasAddress = func(a string) bool { return endpoint.HasAddress(e, a, now()) }
	}
	return c
}

// verify checks s with our OpenPGP keys or S/MIME trust anchors.
func (s *signedEntity) verify(keys *keyring, now nowFunc) sigCheck {
	c := sigCheck{label: s.label}
	if !s.smime {
		v := endpoint.VerifyDetached(s.canonical, s.signature, keys.pgp, now)
		c.status = v.Status
		if e := v.Signer; e != nil {
			c.signer = endpoint.Fingerprint(e)
			c.addresses = endpoint.Addresses(e, now())
			c.hasAddress = func(a string) bool { return endpoint.HasAddress(e, a, now()) }
		}
		if v.Err != nil {
			c.note = v.Err.Error()
		}
		return c
	}
	if s.parseErr != nil {
		c.status, c.note = endpoint.SignatureBad, s.parseErr.Error()
		return c
	}
	cert, err := s.sd.Verify(s.canonical, smime.VerifyOptions{Roots: keys.roots, Now: now})
	if cert != nil {
		c.signer = smime.Fingerprint(cert)
		c.addresses = smime.Addresses(cert)
		c.hasAddress = func(a string) bool { return smime.HasAddress(cert, a) }
	}
	switch {
	case err == nil:
		c.status = endpoint.SignatureGood
	case errors.Is(err, smime.ErrUntrustedSigner):
		c.status, c.note = endpoint.SignatureUnknownKey, err.Error()
	default:
		c.status, c.note = endpoint.SignatureBad, err.Error()
	}
	return c
}

// finish builds the output of a decrypted message: it takes a signature
// off the decrypted entity, verifies every signature, assembles the
// output, and settles the verdict against the output's From address.
func finish(env *envelope, d *decrypted, keys *keyring, now nowFunc) ([]byte, error) {
	var checks []sigCheck
	if env.around != nil {
		checks = append(checks, env.around.verify(keys, now))
	}
	checks = append(checks, d.checks...)
	if env.kind != kindPGPInline {
		inner, err := unwrapInner(d)
		if err != nil {
			return nil, err
		}
		if inner != nil {
			checks = append(checks, inner.verify(keys, now))
		}
	}
	d.checks = checks
	out, err := assemble(env, d)
	if err != nil || len(checks) == 0 {
		return out, err
	}
	from, ok := displayedFrom(out)
	settle(d, from, ok)
	return assemble(env, d)
}

// settle applies the From rule to every good signature and sets d's
// verdict, signer and notes.
func settle(d *decrypted, from string, fromOK bool) {
	best := sigCheck{status: endpoint.SignatureNone}
	d.notes = nil
	for _, c := range d.checks {
		if c.status == endpoint.SignatureGood && (!fromOK || c.hasAddress == nil || !c.hasAddress(from)) {
			c.status = endpoint.SignatureMismatch
			c.note = mismatchNote(c, from, fromOK)
		}
		if c.note != "" {
			d.notes = append(d.notes, printable(c.label+": "+string(c.status)+": "+c.note))
		}
		if c.status != endpoint.SignatureNone && rank[c.status] >= rank[best.status] {
			best = c // on a tie the later, inner, signature
		}
	}
	d.signature, d.signer = best.status, best.signer
	if best.status == endpoint.SignatureUnknownKey {
		d.signer = "" // only the sender's claim
	}
}

// printable keeps a note on one line and free of terminal controls: it
// quotes names and addresses from the sender's certificate.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
}

func mismatchNote(c sigCheck, from string, fromOK bool) string {
	signer := "a signer without an e-mail address"
	if len(c.addresses) > 0 {
		signer = strings.Join(c.addresses, ", ")
	}
	if !fromOK {
		return fmt.Sprintf("signed by %s, but the From field does not hold exactly one address", signer)
	}
	return fmt.Sprintf("signed by %s, not by the From address %s", signer, from)
}

// displayedFrom is the one address of the output's From field. Several
// From fields, or a From with several addresses or none, give false: a
// signature cannot vouch for such a sender.
func displayedFrom(out []byte) (string, bool) {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(out)))
	if err != nil {
		return "", false
	}
	values := h.Values("From")
	if len(values) != 1 {
		return "", false
	}
	// Display names in charsets Go does not know are left encoded: only
	// the address matters here.
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{
		CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
	}}
	list, err := p.ParseList(values[0])
	if err != nil || len(list) != 1 {
		return "", false
	}
	return list[0].Address, true
}

// loadTrust reads the --trust files: the trust anchors for S/MIME signer
// certificates, added to the system roots. No file: the system roots.
func loadTrust(files []string) (*x509.CertPool, error) {
	if len(files) == 0 {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read trust anchors: %w", err)
		}
		certs, err := smime.ReadCerts(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	return pool, nil
}
