package httpd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/pgp"
)

// maxRevocationPackets bounds the packets read from a revocation body.
const maxRevocationPackets = 1000

// errNotRevocation is the 422 for a body without a usable revocation.
var errNotRevocation = errors.New("no key revocation signature made by this key was found in the body")

// revokeKey applies a key revocation signature (RFC 9580 §5.2.1.11, type
// 0x20), as "gpg --gen-revoke" writes it or as part of an exported
// revoked key, to the stored certificate, and stores the result as a
// revocation of that key. The directory then serves the revoked key (so
// clients learn of it) and the gateway no longer encrypts to it
// (Cert.CheckEncryption refuses revoked keys). 422 when the body holds no
// revocation that verifies against the key's primary key.
func (s *server) revokeKey(w http.ResponseWriter, r *http.Request) {
	k, ok := s.storedKey(w, r)
	if !ok {
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if k.Kind != keydir.KindPGP {
		jsonError(w, http.StatusUnprocessableEntity, "only OpenPGP keys take a revocation certificate")
		return
	}
	cert, err := readStoredCert(k)
	if err != nil {
		s.internalError(w, r, "read stored key", err)
		return
	}
	sigs, err := readRevocations(body)
	if err == nil {
		err = applyRevocations(cert, sigs)
	}
	if errors.Is(err, pgp.ErrSecretKey) {
		jsonError(w, http.StatusUnprocessableEntity, "the body contains secret key material; send only the revocation certificate")
		return
	}
	if err != nil {
		jsonError(w, http.StatusUnprocessableEntity, "not a valid revocation certificate for this key: "+err.Error())
		return
	}
	k.Data, k.Updated = cert.Bytes(), time.Time{}
	if k.Data == nil {
		s.internalError(w, r, "serialise revoked key", errors.New("serialisation failed"))
		return
	}
	if err := s.store.Put(keydir.WithAction(r.Context(), keydir.ActionRevoke), k); err != nil {
		s.internalError(w, r, "store revoked key", err)
		return
	}
	s.logger(r).Info("admin API: key revoked", "actor", keydir.ActorFrom(r.Context()), "fingerprint", k.Fingerprint)
	stored, err := s.store.Get(r.Context(), k.Fingerprint)
	if err != nil {
		s.internalError(w, r, "get revoked key", err)
		return
	}
	writeJSON(w, http.StatusOK, s.keyJSON(stored))
}

// readRevocations returns the key revocation signatures in data (armored
// or binary). Other packets (the key, user IDs, other signatures, as in
// an exported revoked key) are skipped; secret key material refuses the
// whole input.
func readRevocations(data []byte) ([]*packet.Signature, error) {
	bin, err := dearmor(data)
	if err != nil {
		return nil, err
	}
	pr := packet.NewReader(bytes.NewReader(bin))
	var sigs []*packet.Signature
	for range maxRevocationPackets {
		p, err := pr.Next()
		if err == io.EOF {
			if len(sigs) == 0 {
				return nil, errNotRevocation
			}
			return sigs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read packets: %w", err)
		}
		switch p := p.(type) {
		case *packet.PrivateKey:
			return nil, pgp.ErrSecretKey
		case *packet.Signature:
			if p.SigType == packet.SigTypeKeyRevocation {
				sigs = append(sigs, p)
			}
		}
	}
	return nil, fmt.Errorf("more than %d packets", maxRevocationPackets)
}

// dearmor returns the binary packets of data. GnuPG's automatically made
// revocation certificates (openpgp-revocs.d) put a ':' before the armor
// header line so that they are not imported by accident; it is removed.
func dearmor(data []byte) ([]byte, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if len(data) > 0 && data[0]&0x80 != 0 { // RFC 9580 §4.2: binary packet header
		return data, nil
	}
	data = bytes.ReplaceAll(data, []byte(":-----BEGIN PGP "), []byte("-----BEGIN PGP "))
	block, err := armor.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decode armor: %w", err)
	}
	switch block.Type {
	case "PGP PUBLIC KEY BLOCK", "PGP SIGNATURE":
	case "PGP PRIVATE KEY BLOCK":
		return nil, pgp.ErrSecretKey
	default:
		return nil, fmt.Errorf("armor block %q is not a revocation certificate", block.Type)
	}
	bin, err := io.ReadAll(block.Body)
	if err != nil {
		return nil, fmt.Errorf("decode armor: %w", err)
	}
	return bin, nil
}

// applyRevocations adds to cert every signature in sigs that verifies as
// a revocation of its primary key and is not there yet. It fails when
// none verifies.
func applyRevocations(cert *pgp.Cert, sigs []*packet.Signature) error {
	e := cert.Entity
	verified := 0
	for _, sig := range sigs {
		if err := e.PrimaryKey.VerifyRevocationSignature(sig); err != nil {
			continue
		}
		verified++
		if !slices.ContainsFunc(e.Revocations, func(have *packet.Signature) bool { return sameSignature(have, sig) }) {
			e.Revocations = append(e.Revocations, sig)
		}
	}
	if verified == 0 {
		return errNotRevocation
	}
	return nil
}

func sameSignature(a, b *packet.Signature) bool {
	var ab, bb bytes.Buffer
	return a.Serialize(&ab) == nil && b.Serialize(&bb) == nil && bytes.Equal(ab.Bytes(), bb.Bytes())
}
