package keydir

import (
	"bytes"
	"context"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/sealgate/sealgate/pgp"
)

// MaxImportBytes caps one import input (a file or a request body).
const MaxImportBytes = 16 << 20

// ImportResult is the outcome for one certificate of an import.
type ImportResult struct {
	Fingerprint string
	Addresses   []string // normalised, sorted, deduplicated; the ones stored
	Err         error    // why this certificate was not stored; nil when it was
}

// ImportPGP stores every usable OpenPGP certificate in data (armored or
// binary, one or many). If the input as a whole is unusable (secret key
// material anywhere in it, garbage, too large) it returns the error and
// stores nothing; errors.Is(err, pgp.ErrSecretKey) reports the first case.
// Otherwise each certificate gets a result: one that cannot be encrypted
// to at now, or that has no valid e-mail address, gets an Err and is not
// stored. The error is non-nil only for a whole-input or store failure;
// after a store failure the results cover the certificates before the one
// that failed, and the ones after it were not stored.
func ImportPGP(ctx context.Context, s Store, data []byte, now time.Time) ([]ImportResult, error) {
	certs, err := pgp.ReadCerts(bytes.NewReader(data), MaxImportBytes)
	if err != nil {
		return nil, fmt.Errorf("keydir: import: %w", err)
	}
	if len(certs) == 0 {
		return nil, errors.New("keydir: import: no OpenPGP certificate found")
	}
	// Validate all before storing any, so a context error cannot leave a
	// valid key half-way through the list unexamined.
	results := make([]ImportResult, len(certs))
	for i, c := range certs {
		results[i] = checkCert(c, now)
	}
	for i, c := range certs {
		if results[i].Err != nil {
			continue
		}
		key := Key{Fingerprint: c.Fingerprint(), Kind: KindPGP, Data: c.Bytes(), Addresses: results[i].Addresses}
		if err := s.Put(ctx, key); err != nil {
			return results[:i], fmt.Errorf("keydir: import %s: %w", key.Fingerprint, err)
		}
	}
	return results, nil
}

// checkCert decides whether c may be published: it must be usable for
// encryption at now and carry at least one address that normalises.
func checkCert(c *pgp.Cert, now time.Time) ImportResult {
	r := ImportResult{Fingerprint: c.Fingerprint()}
	if err := c.CheckEncryption(now); err != nil {
		r.Err = fmt.Errorf("keydir: key %s not imported: %w", r.Fingerprint, err)
		return r
	}
	r.Addresses, r.Err = indexAddresses(c.Addresses(), "key "+r.Fingerprint, "in its user IDs")
	return r
}

// indexAddresses normalises a key's addresses (sorted, without
// duplicates); with none valid, the error says why the key (what) is not
// imported.
func indexAddresses(addrs []string, what, where string) ([]string, error) {
	var out []string
	var bad []error
	for _, a := range addrs {
		n, err := NormalizeAddress(a)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		err := fmt.Errorf("keydir: %s not imported: no valid e-mail address %s", what, where)
		if len(bad) > 0 {
			err = fmt.Errorf("%w: %w", err, errors.Join(bad...))
		}
		return nil, err
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ImportFile reads the file at path (at most MaxImportBytes) and imports
// it: X.509 certificates through ImportX509 with the basic checks only
// (no chain, no revocation), OpenPGP certificates through ImportPGP. Use
// ImportFileWith to validate X.509 chains and revocation.
func ImportFile(ctx context.Context, s Store, path string, now time.Time) ([]ImportResult, error) {
	return ImportFileWith(ctx, s, path, now, ImportOptions{})
}

type inputFormat int

const (
	formatPGP inputFormat = iota
	formatX509
)

// pemCertMarkers start the PEM blocks that hold X.509 certificates
// (RFC 7468 §5 and §6; "X509 CERTIFICATE" is a legacy label).
func pemCertMarkers() []string {
	return []string{
		"-----BEGIN CERTIFICATE-----",
		"-----BEGIN X509 CERTIFICATE-----",
		"-----BEGIN TRUSTED CERTIFICATE-----",
		"-----BEGIN PKCS7-----",
	}
}

// detectFormat tells X.509 input from OpenPGP input. DER starts with an
// ASN.1 SEQUENCE tag (0x30), which is never a valid first OpenPGP packet
// header: RFC 9580 §4.2 requires bit 7 of that octet to be set. PEM
// private keys (any "... PRIVATE KEY" label but OpenPGP's armor) and BER
// with an indefinite length (PKCS#12 files from some exporters) go the
// X.509 way too, where they are refused as private keys.
func detectFormat(data []byte) inputFormat {
	for _, m := range pemCertMarkers() {
		if bytes.Contains(data, []byte(m)) {
			return formatX509
		}
	}
	if hasPEMPrivateKey(data) {
		return formatX509
	}
	var v asn1.RawValue
	if len(data) > 1 && data[0] == 0x30 {
		if data[1] == 0x80 {
			return formatX509
		}
		if _, err := asn1.Unmarshal(data, &v); err == nil && v.IsCompound {
			return formatX509
		}
	}
	return formatPGP
}

// hasPEMPrivateKey reports a "-----BEGIN ...PRIVATE KEY-----" line other
// than OpenPGP's "PGP PRIVATE KEY BLOCK".
func hasPEMPrivateKey(data []byte) bool {
	for _, part := range bytes.Split(data, []byte("-----BEGIN "))[1:] {
		label, _, _ := bytes.Cut(part, []byte("-----"))
		if bytes.HasSuffix(label, []byte("PRIVATE KEY")) && !bytes.HasPrefix(label, []byte("PGP ")) {
			return true
		}
	}
	return false
}

// readFileCapped reads at most limit bytes of the file at path and fails
// if it is larger.
func readFileCapped(path string, limit int64) (data []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keydir: import: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("keydir: import %s: %w", path, cerr)
		}
	}()
	data, err = io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("keydir: import %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("keydir: import %s: file is larger than %d bytes", path, limit)
	}
	return data, nil
}
