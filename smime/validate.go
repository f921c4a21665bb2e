package smime

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/idna"
)

// Mode is the revocation policy, [smime] revocation in the config.
type Mode int

const (
	// HardFail (the zero value and the default): a certificate whose
	// revocation status cannot be established is not used
	// (ErrRevocationUnknown).
	HardFail Mode = iota
	// SoftFail: such a certificate is used, and a warning is logged.
	SoftFail
	// Off: revocation is not checked at all.
	Off
)

// ParseMode reads the config spelling: "hard-fail" (or ""), "soft-fail", "off".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "hard-fail":
		return HardFail, nil
	case "soft-fail":
		return SoftFail, nil
	case "off":
		return Off, nil
	}
	return 0, fmt.Errorf("smime: revocation mode %q: want hard-fail, soft-fail or off", s)
}

func (m Mode) String() string {
	switch m {
	case HardFail:
		return "hard-fail"
	case SoftFail:
		return "soft-fail"
	case Off:
		return "off"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Defaults for the zero values of Options.
const (
	DefaultCacheTTL     = time.Hour
	DefaultFetchTimeout = 10 * time.Second
	DefaultMaxCRLBytes  = 16 << 20
	maxOCSPBytes        = 64 << 10
	maxCacheEntries     = 10000
	// failureTTL is how long a failed CRL or OCSP fetch is remembered, so
	// that a dead responder costs one timeout per minute, not one per RCPT.
	failureTTL = time.Minute
	// clockSkew is the tolerance for a response's thisUpdate/nextUpdate.
	clockSkew = 5 * time.Minute
)

// Options configure a Validator. The zero value checks chains against the
// system roots with hard-fail revocation, which needs HTTPClient.
type Options struct {
	Roots         *x509.CertPool      // trust anchors; nil = the system roots
	Intermediates []*x509.Certificate // extra intermediates offered to every chain
	Revocation    Mode
	// HTTPClient fetches CRLs and OCSP responses: the only network access of
	// this package. Required unless Revocation is Off.
	HTTPClient   *http.Client
	Now          func() time.Time // nil = time.Now
	CacheTTL     time.Duration    // longest reuse of a CRL or OCSP answer; 0 = DefaultCacheTTL
	FetchTimeout time.Duration    // per CRL or OCSP request; 0 = DefaultFetchTimeout
	MaxCRLBytes  int64            // largest CRL fetched; 0 = DefaultMaxCRLBytes
	Logger       *slog.Logger     // soft-fail warnings; nil = discard
}

// Validator decides whether a recipient certificate may be encrypted to.
// It is safe for concurrent use; it caches CRLs and OCSP answers.
type Validator struct {
	roots         *x509.CertPool
	intermediates []*x509.Certificate
	mode          Mode
	client        *http.Client
	now           func() time.Time
	ttl           time.Duration
	fetchTimeout  time.Duration
	maxCRLBytes   int64
	log           *slog.Logger
	cache         *cache
}

// NewValidator checks opts and returns a Validator.
func NewValidator(opts Options) (*Validator, error) {
	v := &Validator{
		roots:         opts.Roots,
		intermediates: slices.Clone(opts.Intermediates),
		mode:          opts.Revocation,
		client:        opts.HTTPClient,
		now:           opts.Now,
		ttl:           opts.CacheTTL,
		fetchTimeout:  opts.FetchTimeout,
		maxCRLBytes:   opts.MaxCRLBytes,
		log:           opts.Logger,
		cache:         newCache(),
	}
	var errs []error
	switch v.mode {
	case HardFail, SoftFail:
		if v.client == nil {
			errs = append(errs, fmt.Errorf("smime: revocation %s needs an HTTPClient (or set revocation off)", v.mode))
		}
	case Off:
	default:
		errs = append(errs, fmt.Errorf("smime: unknown revocation mode %d", int(v.mode)))
	}
	if v.ttl < 0 || v.fetchTimeout < 0 || v.maxCRLBytes < 0 {
		errs = append(errs, errors.New("smime: CacheTTL, FetchTimeout and MaxCRLBytes must not be negative"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.ttl == 0 {
		v.ttl = DefaultCacheTTL
	}
	if v.fetchTimeout == 0 {
		v.fetchTimeout = DefaultFetchTimeout
	}
	if v.maxCRLBytes == 0 {
		v.maxCRLBytes = DefaultMaxCRLBytes
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	return v, nil
}

// Check decides whether cert may be used to encrypt mail to address. It
// runs CheckUsable, then the address match, then the chain (to the roots,
// with the emailProtection EKU, at Now, with intermediates and
// Options.Intermediates as candidates), then revocation of every
// certificate of the chain below the root. A nil error means usable.
// Otherwise errors.Is tells ErrRevoked, ErrRevocationUnknown,
// ErrUnsupportedKey and ErrUnusable apart; the message names the reason.
func (v *Validator) Check(ctx context.Context, cert *x509.Certificate, intermediates []*x509.Certificate, address string) error {
	return v.check(ctx, cert, intermediates, &address)
}

// CheckCert is Check without the address match: for import, where the
// certificate is indexed under all its addresses.
func (v *Validator) CheckCert(ctx context.Context, cert *x509.Certificate, intermediates []*x509.Certificate) error {
	return v.check(ctx, cert, intermediates, nil)
}

func (v *Validator) check(ctx context.Context, cert *x509.Certificate, intermediates []*x509.Certificate, address *string) error {
	now := v.now()
	if err := CheckUsable(cert, now); err != nil {
		return err
	}
	if address != nil && !HasAddress(cert, *address) {
		return unusable(cert, "address %q is not in the certificate (it has %s)", *address, strings.Join(Addresses(cert), ", "))
	}
	pool := x509.NewCertPool()
	for _, c := range v.intermediates {
		pool.AddCert(c)
	}
	for _, c := range intermediates {
		pool.AddCert(c)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: pool,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	})
	if err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return unusable(cert, "untrusted chain: not issued by a trusted CA: %w", err)
		}
		return unusable(cert, "chain: %w", err)
	}
	return v.checkRevocation(ctx, chains[0])
}

// CheckUsable runs the checks that need no trust store and no network:
// within validity at now; an end-entity certificate (not a CA); no
// unhandled critical extension; not signed with SHA-1 or MD5; an RSA key of
// at least MinRSABits (other keys: ErrUnsupportedKey); keyEncipherment when
// the key usage extension is present; emailProtection (or
// anyExtendedKeyUsage) when the EKU extension is present (RFC 8550 §4.4);
// at least one e-mail address. keydir uses it at import when no Validator
// is configured.
func CheckUsable(cert *x509.Certificate, now time.Time) error {
	if cert == nil {
		return fmt.Errorf("%w: no certificate", ErrUnusable)
	}
	if now.Before(cert.NotBefore) {
		return unusable(cert, "not valid before %s", cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(cert.NotAfter) {
		return unusable(cert, "expired on %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if cert.IsCA {
		return unusable(cert, "a CA certificate, not a recipient certificate")
	}
	if len(cert.UnhandledCriticalExtensions) > 0 {
		return unusable(cert, "unhandled critical extension %v", cert.UnhandledCriticalExtensions[0])
	}
	switch cert.SignatureAlgorithm {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1:
		return unusable(cert, "signed with %v, a broken hash", cert.SignatureAlgorithm)
	}
	if err := checkKey(cert); err != nil {
		return err
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		return unusable(cert, "key usage lacks keyEncipherment")
	}
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 {
		if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageEmailProtection) &&
			!slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageAny) {
			return unusable(cert, "extended key usage lacks emailProtection")
		}
	}
	if len(Addresses(cert)) == 0 {
		return unusable(cert, "no e-mail address (no rfc822Name subjectAltName, no subject emailAddress)")
	}
	return nil
}

func checkKey(cert *x509.Certificate) error {
	switch k := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return unusable(cert, "RSA key of %d bits; at least %d needed", bits, MinRSABits)
		}
		return nil
	case *ecdsa.PublicKey, *ecdh.PublicKey:
		return fmt.Errorf("%w: %s: EC certificates need RFC 5753 key agreement, not supported", ErrUnsupportedKey, describe(cert))
	case ed25519.PublicKey:
		return fmt.Errorf("%w: %s: Ed25519 keys cannot encrypt", ErrUnsupportedKey, describe(cert))
	default:
		return fmt.Errorf("%w: %s: %v public key", ErrUnsupportedKey, describe(cert), cert.PublicKeyAlgorithm)
	}
}

// HasAddress reports whether address is one of Addresses(cert). Both sides
// are compared case-insensitively, the domain after IDNA conversion to
// A-labels, so "Bob@Bücher.example" matches "bob@xn--bcher-kva.example".
func HasAddress(cert *x509.Certificate, address string) bool {
	want, ok := foldAddress(address)
	if !ok {
		return false
	}
	for _, a := range Addresses(cert) {
		if got, ok := foldAddress(a); ok && got == want {
			return true
		}
	}
	return false
}

func foldAddress(a string) (string, bool) {
	a = strings.TrimSpace(a)
	a = strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">")
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return "", false
	}
	domain, err := idna.Lookup.ToASCII(strings.TrimSuffix(a[at+1:], "."))
	if err != nil {
		return "", false
	}
	return strings.ToLower(a[:at]) + "@" + strings.ToLower(domain), true
}

// unusable wraps ErrUnusable with the certificate and the reason.
func unusable(cert *x509.Certificate, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %w", ErrUnusable, describe(cert), fmt.Errorf(format, args...))
}

// describe names a certificate for the admin log.
func describe(cert *x509.Certificate) string {
	name := cert.Subject.CommonName
	if name == "" {
		name = cert.Subject.String()
	}
	return fmt.Sprintf("certificate %q (serial %X)", name, cert.SerialNumber)
}
