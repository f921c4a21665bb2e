package keydir

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/sealgate/sealgate/smime"
)

// ImportOptions are the optional parts of an import.
type ImportOptions struct {
	// X509 validates X.509 certificates at import as the gateway does at
	// use: chain to [smime] trust_roots, revocation per [smime] revocation,
	// at the Validator's clock. nil: only the checks that need no trust
	// store and no network (smime.CheckUsable at now: validity, not a CA,
	// keyEncipherment, emailProtection EKU, RSA of at least 2048 bits, an
	// e-mail address); the chain is not checked.
	X509 *smime.Validator
}

// ImportFileWith reads the file at path (at most MaxImportBytes) and
// imports it with ImportWith.
func ImportFileWith(ctx context.Context, s Store, path string, now time.Time, opts ImportOptions) ([]ImportResult, error) {
	data, err := readFileCapped(path, MaxImportBytes)
	if err != nil {
		return nil, err
	}
	return ImportWith(ctx, s, data, now, opts)
}

// ImportWith imports data, recognising its kind: X.509 certificates (PEM,
// DER, PKCS#7 bundles; private keys and PKCS#12 are refused) through
// ImportX509, anything else as OpenPGP through ImportPGP.
func ImportWith(ctx context.Context, s Store, data []byte, now time.Time, opts ImportOptions) ([]ImportResult, error) {
	if int64(len(data)) > MaxImportBytes {
		return nil, fmt.Errorf("keydir: import: input is larger than %d bytes", MaxImportBytes)
	}
	if detectFormat(data) == formatX509 {
		return ImportX509(ctx, s, data, now, opts.X509)
	}
	return ImportPGP(ctx, s, data, now)
}

// ImportX509 stores every usable X.509 certificate in data as a KindX509
// key: the DER, under the upper-case hex SHA-256 of the DER, indexed by
// its normalised e-mail addresses (rfc822Name subjectAltNames, or the
// subject emailAddress when there is none).
//
// If the input as a whole is unusable (it holds a private key or is a
// PKCS#12 file, errors.Is(err, smime.ErrPrivateKey); or a certificate in
// it does not parse) it returns the error and stores nothing. Otherwise
// each certificate gets a result; one that v (or, with v nil,
// smime.CheckUsable at now) refuses, or that has no valid address, gets an
// Err and is not stored. The other certificates of the input are offered
// as intermediates, so a leaf may come with its chain; the CA
// certificates of that chain are themselves refused ("a CA certificate").
// The error is non-nil only for a whole-input or store failure, as with
// ImportPGP.
func ImportX509(ctx context.Context, s Store, data []byte, now time.Time, v *smime.Validator) ([]ImportResult, error) {
	certs, err := smime.ReadCerts(data)
	if err != nil {
		return nil, fmt.Errorf("keydir: import: %w", err)
	}
	results := make([]ImportResult, len(certs))
	for i, c := range certs {
		results[i] = checkX509(ctx, c, certs, now, v)
	}
	for i, c := range certs {
		if results[i].Err != nil {
			continue
		}
		key := Key{Fingerprint: results[i].Fingerprint, Kind: KindX509, Data: withChain(c, certs), Addresses: results[i].Addresses}
		if err := s.Put(ctx, key); err != nil {
			return results[:i], fmt.Errorf("keydir: import %s: %w", key.Fingerprint, err)
		}
	}
	return results, nil
}

// withChain is what is stored for leaf: its DER followed by the DER of the
// CA certificates that came with it, so the chain can be built again at
// every use (x509.Verify fetches no missing intermediates). Concatenated
// DER reads back with x509.ParseCertificates; the leaf comes first.
func withChain(leaf *x509.Certificate, all []*x509.Certificate) []byte {
	data := append([]byte(nil), leaf.Raw...)
	for _, c := range all {
		if c != leaf && c.IsCA {
			data = append(data, c.Raw...)
		}
	}
	return data
}

// checkX509 decides whether c may be published.
func checkX509(ctx context.Context, c *x509.Certificate, all []*x509.Certificate, now time.Time, v *smime.Validator) ImportResult {
	r := ImportResult{Fingerprint: smime.Fingerprint(c)}
	var err error
	if v != nil {
		err = v.CheckCert(ctx, c, all)
	} else {
		err = smime.CheckUsable(c, now)
	}
	if err != nil {
		r.Err = fmt.Errorf("keydir: certificate %s not imported: %w", r.Fingerprint, err)
		return r
	}
	r.Addresses, r.Err = indexAddresses(smime.Addresses(c), "certificate "+r.Fingerprint, "in it")
	return r
}
