package smime

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"time"

	"golang.org/x/crypto/ocsp"
)

// checkRevocation checks every certificate of chain except the root (the
// trust anchor) against its issuer, the next one in the chain.
//
// A certificate is revoked when its OCSP responder or one of its CRLs says
// so. Its status is known when one of them answers with a verified, fresh
// response; OCSP is asked first. A certificate with neither an OCSP URL
// nor an HTTP CRL distribution point has nothing to check against and
// passes: its CA publishes no revocation information.
func (v *Validator) checkRevocation(ctx context.Context, chain []*x509.Certificate) error {
	if v.mode == Off {
		return nil
	}
	for i := 0; i+1 < len(chain); i++ {
		err := v.certStatus(ctx, chain[i], chain[i+1])
		switch {
		case err == nil:
		case errors.Is(err, ErrRevoked):
			return err
		case v.mode == SoftFail:
			v.log.WarnContext(ctx, "smime: revocation status unknown; certificate used under soft-fail", "err", err)
		default:
			return err
		}
	}
	return nil
}

// certStatus returns nil (good), an error wrapping ErrRevoked, or one
// wrapping ErrRevocationUnknown.
func (v *Validator) certStatus(ctx context.Context, cert, issuer *x509.Certificate) error {
	var problems []error
	if urls := httpURLs(cert.OCSPServer); len(urls) > 0 {
		err := v.ocspStatus(ctx, cert, issuer, urls)
		if err == nil || errors.Is(err, ErrRevoked) {
			return err
		}
		problems = append(problems, err)
	}
	if urls := httpURLs(cert.CRLDistributionPoints); len(urls) > 0 {
		err := v.crlStatus(ctx, cert, issuer, urls)
		if err == nil || errors.Is(err, ErrRevoked) {
			return err
		}
		problems = append(problems, err)
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s: %w", ErrRevocationUnknown, describe(cert), errors.Join(problems...))
}

// ocspResult is what the cache keeps of an OCSP answer.
type ocspResult struct {
	status    int // ocsp.Good or ocsp.Revoked
	revokedAt time.Time
	reason    int
	url       string
}

// ocspStatus asks the certificate's OCSP responders in turn (RFC 6960,
// POST as in §A.1) and returns the first verified answer.
func (v *Validator) ocspStatus(ctx context.Context, cert, issuer *x509.Certificate, urls []string) error {
	key := "ocsp " + fingerprint(issuer) + " " + cert.SerialNumber.Text(16)
	val, err := v.cache.do(ctx, v.now, key, func() (any, time.Time, error) {
		// SHA-1 CertIDs are what every responder understands (RFC 5019 §2.1.1).
		req, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{Hash: crypto.SHA1})
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("smime: OCSP request: %w", err)
		}
		var errs []error
		for _, u := range urls {
			res, until, err := v.askOCSP(ctx, u, req, cert, issuer)
			if err == nil {
				return res, until, nil
			}
			errs = append(errs, err)
		}
		return nil, time.Time{}, errors.Join(errs...)
	})
	if err != nil {
		return err
	}
	res := val.(ocspResult)
	if res.status == ocsp.Revoked {
		return fmt.Errorf("%w: %s revoked on %s (reason %d) according to OCSP responder %s",
			ErrRevoked, describe(cert), res.revokedAt.UTC().Format(time.RFC3339), res.reason, res.url)
	}
	return nil
}

func (v *Validator) askOCSP(ctx context.Context, u string, req []byte, cert, issuer *x509.Certificate) (ocspResult, time.Time, error) {
	body, err := v.fetch(ctx, http.MethodPost, u, req, maxOCSPBytes)
	if err != nil {
		return ocspResult{}, time.Time{}, fmt.Errorf("smime: OCSP %s: %w", u, err)
	}
	resp, err := ocsp.ParseResponseForCert(body, cert, issuer)
	if err != nil {
		return ocspResult{}, time.Time{}, fmt.Errorf("smime: OCSP %s: bad response: %w", u, err)
	}
	now := v.now()
	// RFC 6960 §4.2.2.2: a delegated responder's certificate is issued by
	// the CA (ocsp checked the signature) and carries id-kp-OCSPSigning.
	if rc := resp.Certificate; rc != nil && !bytes.Equal(rc.Raw, issuer.Raw) {
		if !slices.Contains(rc.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
			return ocspResult{}, time.Time{}, fmt.Errorf("smime: OCSP %s: responder certificate lacks the OCSPSigning EKU", u)
		}
		if now.Before(rc.NotBefore) || now.After(rc.NotAfter) {
			return ocspResult{}, time.Time{}, fmt.Errorf("smime: OCSP %s: responder certificate outside its validity", u)
		}
	}
	if err := fresh(now, resp.ThisUpdate, resp.NextUpdate); err != nil {
		return ocspResult{}, time.Time{}, fmt.Errorf("smime: OCSP %s: %w", u, err)
	}
	switch resp.Status {
	case ocsp.Good, ocsp.Revoked:
	default:
		return ocspResult{}, time.Time{}, fmt.Errorf("smime: OCSP %s: responder does not know the certificate", u)
	}
	res := ocspResult{status: resp.Status, revokedAt: resp.RevokedAt, reason: resp.RevocationReason, url: u}
	return res, v.expiry(now, resp.NextUpdate), nil
}

// crlEntry is what the cache keeps of a verified CRL.
type crlEntry struct {
	revoked map[string]time.Time // serial (hex) → revocation time
	url     string
}

// crlStatus fetches the certificate's HTTP CRL distribution points in turn
// and returns the answer of the first CRL that verifies.
func (v *Validator) crlStatus(ctx context.Context, cert, issuer *x509.Certificate, urls []string) error {
	var errs []error
	for _, u := range urls {
		key := "crl " + fingerprint(issuer) + " " + u
		val, err := v.cache.do(ctx, v.now, key, func() (any, time.Time, error) {
			return v.loadCRL(ctx, u, issuer)
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		crl := val.(crlEntry)
		if at, ok := crl.revoked[cert.SerialNumber.Text(16)]; ok {
			return fmt.Errorf("%w: %s revoked on %s according to CRL %s",
				ErrRevoked, describe(cert), at.UTC().Format(time.RFC3339), crl.url)
		}
		return nil
	}
	return errors.Join(errs...)
}

// loadCRL fetches, parses and verifies one CRL (RFC 5280 §6.3.3): signed
// by the issuer, naming the issuer, current.
func (v *Validator) loadCRL(ctx context.Context, u string, issuer *x509.Certificate) (any, time.Time, error) {
	body, err := v.fetch(ctx, http.MethodGet, u, nil, v.maxCRLBytes)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("smime: CRL %s: %w", u, err)
	}
	if b, _ := pem.Decode(body); b != nil && b.Type == "X509 CRL" {
		body = b.Bytes
	}
	crl, err := x509.ParseRevocationList(body)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("smime: CRL %s: %w", u, err)
	}
	if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
		return nil, time.Time{}, fmt.Errorf("smime: CRL %s: issued by %s, not by %s", u, crl.Issuer, issuer.Subject)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return nil, time.Time{}, fmt.Errorf("smime: CRL %s: signature: %w", u, err)
	}
	now := v.now()
	if err := fresh(now, crl.ThisUpdate, crl.NextUpdate); err != nil {
		return nil, time.Time{}, fmt.Errorf("smime: CRL %s: %w", u, err)
	}
	entry := crlEntry{revoked: make(map[string]time.Time, len(crl.RevokedCertificateEntries)), url: u}
	for _, r := range crl.RevokedCertificateEntries {
		entry.revoked[r.SerialNumber.Text(16)] = r.RevocationTime
	}
	return entry, v.expiry(now, crl.NextUpdate), nil
}

// fresh checks a response's validity window against now, with clockSkew.
func fresh(now, thisUpdate, nextUpdate time.Time) error {
	if thisUpdate.After(now.Add(clockSkew)) {
		return fmt.Errorf("issued in the future (thisUpdate %s)", thisUpdate.UTC().Format(time.RFC3339))
	}
	if !nextUpdate.IsZero() && now.After(nextUpdate.Add(clockSkew)) {
		return fmt.Errorf("stale (nextUpdate %s)", nextUpdate.UTC().Format(time.RFC3339))
	}
	return nil
}

// expiry is how long an answer is reused: until its nextUpdate, but never
// longer than the cache TTL.
func (v *Validator) expiry(now, nextUpdate time.Time) time.Time {
	limit := now.Add(v.ttl)
	if !nextUpdate.IsZero() && nextUpdate.Before(limit) {
		return nextUpdate
	}
	return limit
}

// fetch does one HTTP request through the injected client, within
// FetchTimeout, and reads at most limit bytes of a 200 answer.
func (v *Validator) fetch(ctx context.Context, method, u string, body []byte, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, v.fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/ocsp-request")
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }() // a read-only body: nothing to lose
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP status %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("response larger than %d bytes", limit)
	}
	return data, nil
}

// httpURLs keeps the http and https URLs; LDAP distribution points are not
// supported.
func httpURLs(urls []string) []string {
	var out []string
	for _, s := range urls {
		if u, err := url.Parse(s); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
			out = append(out, s)
		}
	}
	return out
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
