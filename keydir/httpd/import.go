package httpd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/pgp"
)

// importResultJSON is the outcome for one certificate of an import.
type importResultJSON struct {
	Fingerprint string   `json:"fingerprint"`
	Addresses   []string `json:"addresses"`
	Imported    bool     `json:"imported"`
	Error       string   `json:"error,omitempty"`
}

// importKeys imports the public keys in the body with the same checks as
// "sealgate keys import" (keydir.ImportPGP): 201 with a result per
// certificate when at least one was stored; 422 with nothing stored when
// the input holds secret key material or is not OpenPGP at all, or when
// every certificate was refused; 413 when the body is too large.
func (s *server) importKeys(w http.ResponseWriter, r *http.Request) {
	data, ok := s.readBody(w, r)
	if !ok {
		return
	}
	// Refuse a bad input as a whole before the store is touched, so that
	// ImportPGP's error below can only be a store failure.
	if _, err := pgp.ReadCerts(bytes.NewReader(data), s.maxBody); err != nil {
		jsonError(w, http.StatusUnprocessableEntity, inputProblem(err))
		return
	}
	results, err := keydir.ImportPGP(r.Context(), s.store, data, s.now())
	if err != nil {
		s.internalError(w, r, "import", err)
		return
	}
	out := make([]importResultJSON, len(results))
	imported := 0
	for i, res := range results {
		out[i] = importResultJSON{Fingerprint: res.Fingerprint, Addresses: res.Addresses, Imported: res.Err == nil}
		if out[i].Addresses == nil {
			out[i].Addresses = []string{}
		}
		if res.Err != nil {
			out[i].Error = res.Err.Error()
			continue
		}
		imported++
		s.logger(r).Info("admin API: key imported", "actor", keydir.ActorFrom(r.Context()), "fingerprint", res.Fingerprint, "addresses", res.Addresses)
	}
	if imported == 0 {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": "no key was imported", "results": out})
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"results": out})
}

// inputProblem explains why a key input was refused as a whole.
func inputProblem(err error) string {
	if errors.Is(err, pgp.ErrSecretKey) {
		return "the input contains secret key material; only public keys may be published, and nothing was stored"
	}
	return "not a usable OpenPGP public key input, nothing was stored: " + err.Error()
}

// readBody reads the whole request body, at most s.maxBody bytes (a key
// or revocation is small, and the parsers need it whole), or answers 413.
func (s *server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	tooLarge := fmt.Sprintf("request body is larger than %d bytes", s.maxBody)
	if r.ContentLength > s.maxBody {
		jsonError(w, http.StatusRequestEntityTooLarge, tooLarge)
		return nil, false
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		jsonError(w, http.StatusRequestEntityTooLarge, tooLarge)
		return nil, false
	case err != nil:
		jsonError(w, http.StatusBadRequest, "cannot read request body")
		return nil, false
	}
	return data, true
}

// armorKey armors binary certificates as a "PGP PUBLIC KEY BLOCK". The
// encoder writes the CRC-24 line, which GnuPG 2.2 needs (see pgp/armor.go).
func armorKey(data []byte) (string, error) {
	var buf bytes.Buffer
	aw, err := armor.Encode(&buf, "PGP PUBLIC KEY BLOCK", nil)
	if err != nil {
		return "", err
	}
	if _, err := aw.Write(data); err != nil {
		return "", err
	}
	if err := aw.Close(); err != nil {
		return "", err
	}
	buf.WriteByte('\n')
	return buf.String(), nil
}
