package main

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/sealgate/sealgate/config"
	"github.com/sealgate/sealgate/smime"
)

// revocationFetchTimeout bounds each CRL or OCSP request, so a slow
// responder defers a recipient (hard-fail) instead of stalling the session.
const revocationFetchTimeout = 10 * time.Second

// newSMIMEValidator builds the certificate validator from [smime]:
// trust_roots (none: the system roots) and the revocation mode. It also
// sets the CMS library's algorithms once (smime.Setup: AES-256-CBC, never
// its DES default).
func newSMIMEValidator(c config.SMIME, log *slog.Logger) (*smime.Validator, error) {
	smime.Setup()
	mode, err := smime.ParseMode(c.Revocation)
	if err != nil {
		return nil, err
	}
	var roots *x509.CertPool
	if len(c.TrustRoots) > 0 {
		roots = x509.NewCertPool()
		for _, f := range c.TrustRoots {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("smime.trust_roots: %w", err)
			}
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("smime.trust_roots: %s holds no PEM certificate", f)
			}
		}
	}
	return smime.NewValidator(smime.Options{
		Roots:        roots,
		Revocation:   mode,
		HTTPClient:   &http.Client{Timeout: revocationFetchTimeout},
		FetchTimeout: revocationFetchTimeout,
		Logger:       log,
	})
}
