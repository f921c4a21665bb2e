package endpoint

// The EFAIL set of reliability.md P1 and the truncation and tampering
// cases: every one is refused with ErrDecrypt and no plaintext.

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

func wantRefused(t *testing.T, name string, msg []byte, keys ...*openpgp.Entity) {
	t.Helper()
	res, err := decryptWith(msg, keys...)
	if !errors.Is(err, ErrDecrypt) || res != nil {
		t.Errorf("%s: got %v, err %v; want nil and ErrDecrypt", name, res, err)
	}
}

// TestEFAILP1aSED: a SED packet (tag 9), which go-crypto itself decrypts
// when told to accept unauthenticated data, is refused.
func TestEFAILP1aSED(t *testing.T) {
	t.Parallel()
	k := keyFor(t, ProfileDefault)
	msg := craft(t, k.entity, literal(t, plaintext), formSED)
	// The crafted message is well-formed: with the insecure switch
	// (which sealmail never sets) go-crypto reads it.
	md, err := openpgp.ReadMessage(bytes.NewReader(msg), openpgp.EntityList{k.entity}, nil,
		&packet.Config{InsecureAllowUnauthenticatedMessages: true})
	if err != nil {
		t.Fatalf("insecure ReadMessage: %v", err)
	}
	if got, err := io.ReadAll(md.UnverifiedBody); err != nil || !bytes.Equal(got, plaintext) {
		t.Fatalf("insecure ReadMessage read %q, %v", got, err)
	}
	wantRefused(t, "SED", msg, k.entity)
}

// TestEFAILP1bMDCMissing: SEIPDv1 without its MDC packet.
func TestEFAILP1bMDCMissing(t *testing.T) {
	t.Parallel()
	k := keyFor(t, ProfileDefault)
	if _, err := decryptWith(craft(t, k.entity, literal(t, plaintext), formSEIPDv1), k.entity); err != nil {
		t.Fatalf("the hand-built SEIPDv1 with MDC must decrypt: %v", err)
	}
	wantRefused(t, "no MDC", craft(t, k.entity, literal(t, plaintext), formNoMDC), k.entity)
}

// TestEFAILP1cdFlippedByte flips every byte of SEIPDv1 (MDC) and SEIPDv2
// (AEAD) messages in turn. Inside the encrypted data packet every flip is
// refused. The session key packet carries no integrity protection of its
// own, nor does the packet framing: a flip there is refused too, or (in
// encodings go-crypto reads leniently, such as an MPI's bit count or a
// length turned into a partial length that ends at the same place)
// changes nothing; it never yields a different plaintext.
func TestEFAILP1cdFlippedByte(t *testing.T) {
	t.Parallel()
	for _, p := range []Profile{ProfileDefault, ProfileRFC9580} {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			k := keyFor(t, p)
			want := []byte("Content-Type: text/plain\r\n\r\nshort\r\n")
			msg := binary(t, gatewayEncrypt(t, want, k))
			ps := packets(t, msg)
			if n := len(cat(ps...)); n != len(msg) {
				t.Fatalf("packets re-serialised to %d bytes, message has %d: offsets unknown", n, len(msg))
			}
			last := ps[len(ps)-1]
			encryptedData := len(msg) - len(last) + newHeaderLen(last)
			for i := range msg {
				for _, bit := range []byte{0x01, 0x80} {
					flipped := bytes.Clone(msg)
					flipped[i] ^= bit
					res, err := decryptWith(flipped, k.entity)
					switch {
					case errors.Is(err, ErrDecrypt) && res == nil:
					case i < encryptedData && err == nil && bytes.Equal(res.Plaintext, want):
					default:
						t.Fatalf("byte %d of %d ^ %#x (encrypted data from %d): got %v, err %v; want ErrDecrypt",
							i, len(msg), bit, encryptedData, res, err)
					}
				}
			}
		})
	}
}

// newHeaderLen is the length of a new-format packet header (RFC 9580
// §4.2.1).
func newHeaderLen(p []byte) int {
	switch l := p[1]; {
	case l < 192 || l >= 224 && l < 255:
		return 2
	case l < 224:
		return 3
	}
	return 6
}

// TestTruncated cuts messages at every length.
func TestTruncated(t *testing.T) {
	t.Parallel()
	for _, p := range []Profile{ProfileDefault, ProfileRFC9580} {
		k := keyFor(t, p)
		msg := binary(t, gatewayEncrypt(t, plaintext, k))
		for n := range len(msg) {
			if res, err := decryptWith(msg[:n], k.entity); !errors.Is(err, ErrDecrypt) || res != nil {
				t.Fatalf("%s: %d of %d bytes: got %v, err %v", p, n, len(msg), res, err)
			}
		}
	}
}

// TestTrailingData: nothing may follow the encrypted data packet.
func TestTrailingData(t *testing.T) {
	t.Parallel()
	k := keyFor(t, ProfileDefault)
	msg := craft(t, k.entity, literal(t, plaintext), formSEIPDv1)
	wantRefused(t, "literal after", cat(msg, literal(t, []byte("<img src=x>"))), k.entity)
	wantRefused(t, "two encrypted messages", cat(msg, msg), k.entity)
}
