package pgp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// outputBufferSize batches the armor's short lines into larger writes.
const outputBufferSize = 32 << 10

// EncryptOptions tunes Encrypt and EncryptMIME. The zero value is safe.
type EncryptOptions struct {
	// Now returns the current time; nil means time.Now. It decides which
	// keys are valid (expiry, revocation) and which subkey is chosen.
	Now func() time.Time
}

func (o EncryptOptions) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// Encrypt returns a writer; what is written to it is encrypted to every
// recipient and written ASCII-armored to w. Close finishes the message
// (it does not close w).
//
// Every recipient must pass CheckEncryption. The message is not signed and
// not compressed. The cipher is AES-256 unless a recipient's preferences
// exclude it (go-crypto then falls back to the mandatory AES-128). Integrity
// protection is always on: SEIPDv2 (AEAD, RFC 9580 §5.13.2) when every
// recipient advertises it in its Features subpacket, SEIPDv1 (MDC, RFC 9580
// §5.13.1) otherwise. The armor has a CRC-24 line for GnuPG 2.2 unless
// every recipient key is v6 (see armor.go). Memory use does not depend on
// the message size. If a recipient is refused, nothing is written to w.
func Encrypt(w io.Writer, to []*Cert, opts EncryptOptions) (io.WriteCloser, error) {
	out := bufio.NewWriterSize(w, outputBufferSize)
	// A stand-alone armored message ends with a line break, as gpg writes it.
	enc, err := encryptArmored(out, to, opts, "\n", "\n")
	if err != nil {
		return nil, err // not a nil *encryptWriter in a non-nil interface
	}
	return enc, nil
}

// encryptArmored encrypts to out with armor lines ending in eol; trailer is
// written after the armor's END line, then out is flushed. On error nothing
// has been flushed to the underlying writer.
func encryptArmored(out *bufio.Writer, to []*Cert, opts EncryptOptions, eol, trailer string) (*encryptWriter, error) {
	// go-crypto works in whole seconds; check keys at the same instant.
	now := opts.now().Truncate(time.Second)
	entities, err := recipients(to, now)
	if err != nil {
		return nil, err
	}
	armored, err := newArmorWriter(out, eol, wantChecksum(entities))
	if err != nil {
		return nil, fmt.Errorf("pgp: start armor: %w", err)
	}
	// Binary literal data: the MIME entity's bytes travel untouched
	// (RFC 3156 §4); no file name or date is revealed (RFC 9580 §5.9).
	hints := &openpgp.FileHints{IsBinary: true}
	plaintext, err := openpgp.Encrypt(armored, entities, nil, hints, encryptConfig(now))
	if err != nil {
		return nil, fmt.Errorf("pgp: encrypt: %w", err)
	}
	return &encryptWriter{plaintext: plaintext, armor: armored, out: out, trailer: trailer}, nil
}

// wantChecksum says whether the armor gets a CRC-24 line (see armor.go):
// yes, unless every recipient has a v6 key, which GnuPG 2.2 cannot use
// anyway; pure v6 output follows RFC 9580 §6.1 and omits it.
func wantChecksum(to []*openpgp.Entity) bool {
	for _, e := range to {
		if e.PrimaryKey.Version != 6 {
			return true
		}
	}
	return false
}

// recipients checks every recipient at now and returns their entities.
func recipients(to []*Cert, now time.Time) ([]*openpgp.Entity, error) {
	if len(to) == 0 {
		return nil, errors.New("pgp: encrypt: no recipients")
	}
	entities := make([]*openpgp.Entity, len(to))
	for i, c := range to {
		if err := c.CheckEncryption(now); err != nil {
			return nil, err
		}
		entities[i] = c.Entity
	}
	return entities, nil
}

// encryptConfig is the go-crypto configuration for every message we write.
func encryptConfig(now time.Time) *packet.Config {
	return &packet.Config{
		DefaultCipher: packet.CipherAES256,
		// No compression: compressing attacker-influenced data next to
		// secrets leaks through the length (CRIME-style), it costs CPU, and
		// mail attachments are mostly compressed already. RFC 9580 §5.6
		// lets a sender omit it.
		DefaultCompressionAlgo: packet.CompressionNone,
		// A non-nil AEADConfig lets go-crypto use SEIPDv2, but only when
		// every recipient's self-signature advertises it (write.go);
		// otherwise it writes SEIPDv1 with MDC. Defaults: OCB, the mode
		// RFC 9580 §5.13.2 requires, and 256 KiB chunks.
		AEADConfig: &packet.AEADConfig{},
		Time:       func() time.Time { return now },
	}
}

// encryptWriter is the plaintext end of an armored encryption chain.
type encryptWriter struct {
	plaintext io.WriteCloser // literal data inside the encrypted packet
	armor     io.WriteCloser
	out       *bufio.Writer
	trailer   string
	closed    bool
}

func (e *encryptWriter) Write(p []byte) (int, error) {
	if e.closed {
		return 0, errors.New("pgp: write after close")
	}
	return e.plaintext.Write(p)
}

// Close ends the literal data and the encrypted packet (writing the MDC or
// the last AEAD chunk), then the armor, then the trailer, and flushes.
func (e *encryptWriter) Close() error {
	if e.closed {
		return errors.New("pgp: writer already closed")
	}
	e.closed = true
	if err := e.plaintext.Close(); err != nil {
		return fmt.Errorf("pgp: finish encryption: %w", err)
	}
	if err := e.armor.Close(); err != nil {
		return fmt.Errorf("pgp: finish armor: %w", err)
	}
	if _, err := e.out.WriteString(e.trailer); err != nil {
		return fmt.Errorf("pgp: finish message: %w", err)
	}
	if err := e.out.Flush(); err != nil {
		return fmt.Errorf("pgp: flush message: %w", err)
	}
	return nil
}
