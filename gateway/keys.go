package gateway

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/pgp"
	"github.com/sealgate/sealgate/smime"
)

// certCache keeps parsed certificates, keyed by fingerprint and the time the
// directory last changed the key, so a key is parsed once, not per message.
type certCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*pgp.Cert
}

func newCertCache(max int) *certCache {
	return &certCache{max: max, m: make(map[string]*pgp.Cert)}
}

func (c *certCache) get(k keydir.Key) (*pgp.Cert, error) {
	id := k.Fingerprint + "/" + k.Updated.UTC().Format(time.RFC3339Nano)
	c.mu.Lock()
	cert, ok := c.m[id]
	c.mu.Unlock()
	if ok {
		return cert, nil
	}
	certs, err := pgp.ReadCerts(bytes.NewReader(k.Data), int64(len(k.Data))+1)
	if err != nil {
		return nil, fmt.Errorf("gateway: stored key %s: %w", k.Fingerprint, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("gateway: stored key %s holds %d certificates", k.Fingerprint, len(certs))
	}
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m) // a crude bound; the directory is the source of truth
	}
	c.m[id] = certs[0]
	c.mu.Unlock()
	return certs[0], nil
}

// keyAnswer is what the directory holds for one recipient.
type keyAnswer struct {
	pgp          *pgp.Cert         // the OpenPGP certificate to encrypt to, if any
	smime        *x509.Certificate // the S/MIME certificate to encrypt to, if any
	smimeUnknown error             // a certificate whose revocation status is unknown
	unusable     []string          // why other keys were passed over, for the log
}

// lookupKeys asks the directory and picks the newest usable OpenPGP
// certificate. A stored key that cannot be parsed is an error, not a
// missing key: for a required recipient that must defer, never downgrade.
func (s *Server) lookupKeys(ctx context.Context, address string) (keyAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.LookupTimeout)
	defer cancel()
	keys, err := s.opts.Directory.Lookup(ctx, address)
	if err != nil {
		return keyAnswer{}, fmt.Errorf("gateway: look up %s: %w", address, err)
	}
	now := s.opts.Now()
	var ans keyAnswer
	for _, k := range keys {
		if k.Kind == keydir.KindX509 {
			if err := s.considerX509(ctx, k, address, &ans); err != nil {
				return keyAnswer{}, err
			}
			continue
		}
		if k.Kind != keydir.KindPGP {
			continue
		}
		cert, err := s.certs.get(k)
		if err != nil {
			return keyAnswer{}, err
		}
		if err := cert.CheckEncryption(now); err != nil {
			ans.unusable = append(ans.unusable, fmt.Sprintf("%s: %v", k.Fingerprint, err))
			continue
		}
		if ans.pgp == nil || cert.Entity.PrimaryKey.CreationTime.After(ans.pgp.Entity.PrimaryKey.CreationTime) {
			ans.pgp = cert
		}
	}
	return ans, nil
}

// considerX509 checks a stored S/MIME certificate for address (chain, key
// usage, revocation: smime.Validator.Check) and keeps the newest usable
// one. A revoked certificate counts as unusable; one whose revocation
// status cannot be established (hard-fail) is remembered, so a recipient
// that needs it is deferred rather than refused or sent in plaintext.
func (s *Server) considerX509(ctx context.Context, k keydir.Key, address string, ans *keyAnswer) error {
	if s.opts.SMIME == nil {
		ans.unusable = append(ans.unusable, k.Fingerprint+": S/MIME is not enabled")
		return nil
	}
	chain, err := s.x509s.get(k)
	if err != nil {
		return err
	}
	cert := chain[0]
	err = s.opts.SMIME.Check(ctx, cert, chain[1:], address)
	switch {
	case err == nil:
		if ans.smime == nil || cert.NotBefore.After(ans.smime.NotBefore) {
			ans.smime = cert
		}
	case errors.Is(err, smime.ErrRevocationUnknown):
		ans.smimeUnknown = err
	default:
		ans.unusable = append(ans.unusable, fmt.Sprintf("%s: %v", k.Fingerprint, err))
	}
	return nil
}

// x509Cache keeps parsed certificates like certCache does for OpenPGP: the
// stored leaf first, then the CA certificates imported with it.
type x509Cache struct {
	mu  sync.Mutex
	max int
	m   map[string][]*x509.Certificate
}

func newX509Cache(max int) *x509Cache {
	return &x509Cache{max: max, m: map[string][]*x509.Certificate{}}
}

func (c *x509Cache) get(k keydir.Key) ([]*x509.Certificate, error) {
	id := k.Fingerprint + "/" + k.Updated.UTC().Format(time.RFC3339Nano)
	c.mu.Lock()
	cert, ok := c.m[id]
	c.mu.Unlock()
	if ok {
		return cert, nil
	}
	cert, err := x509.ParseCertificates(k.Data)
	if err == nil && len(cert) == 0 {
		err = errors.New("no certificate")
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: stored certificate %s: %w", k.Fingerprint, err)
	}
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[id] = cert
	c.mu.Unlock()
	return cert, nil
}
