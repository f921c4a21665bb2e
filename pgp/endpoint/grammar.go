package endpoint

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Bounds of the decrypted packet stream (reliability.md P8): nested
// compression and packets per level. GnuPG and Sequoia produce one
// compressed layer at most and a handful of packets.
const (
	maxCompressionDepth = 3
	maxPacketsPerLevel  = 64
)

// Packet tags of the decrypted stream (RFC 9580 §5).
const (
	tagSignature  = 2
	tagOnePassSig = 4
	tagCompressed = 8
	tagMarker     = 10
	tagLiteral    = 11
	tagPadding    = 21
)

// checkGrammar checks that the decrypted packet stream data is exactly one
// OpenPGP message of the forms RFC 9580 §10.3 allows inside encryption:
//
//	Message   := Literal | Compressed(Message) | Signature Message
//	           | OnePassSignature Message Signature
//
// Anything else is refused: two literal packets, a literal packet before
// or after a signed message (GnuPG's bad_fols/bad_olsf, the unsigned-data
// injection of reliability.md P9), one-pass signatures without their
// signature packets, packets after the message, or an encrypted message
// inside the encrypted one. go-crypto's ReadMessage alone returns the first
// literal packet and skips what follows it.
func checkGrammar(data []byte, limit int64, depth int) error {
	tokens, err := tokenize(data, limit, depth)
	if err != nil {
		return err
	}
	rest, err := parseMessage(tokens)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("packet grammar: %d packets after the message", len(rest))
	}
	return nil
}

// tokenize returns one symbol per packet of data: 'L'iteral, 'C'ompressed
// (whose content is checked recursively), 'O'ne-pass signature,
// 'S'ignature. Marker and padding packets are ignored (RFC 9580 §5.8,
// §5.14).
func tokenize(data []byte, limit int64, depth int) ([]byte, error) {
	var tokens []byte
	r := packet.NewOpaqueReader(bytes.NewReader(data))
	for {
		op, err := r.Next()
		if err == io.EOF {
			return tokens, nil
		}
		if err != nil {
			return nil, fmt.Errorf("packet grammar: %w", err)
		}
		if len(tokens) == maxPacketsPerLevel {
			return nil, fmt.Errorf("packet grammar: more than %d packets", maxPacketsPerLevel)
		}
		switch op.Tag {
		case tagMarker, tagPadding:
			continue
		case tagLiteral, tagOnePassSig, tagSignature:
			if _, err := op.Parse(); err != nil {
				return nil, fmt.Errorf("packet grammar: tag %d: %w", op.Tag, err)
			}
			tokens = append(tokens, symbol(op.Tag))
		case tagCompressed:
			if err := checkCompressed(op, limit, depth); err != nil {
				return nil, err
			}
			tokens = append(tokens, 'C')
		default:
			return nil, fmt.Errorf("packet grammar: unexpected packet tag %d in the decrypted data", op.Tag)
		}
	}
}

func symbol(tag uint8) byte {
	switch tag {
	case tagLiteral:
		return 'L'
	case tagOnePassSig:
		return 'O'
	}
	return 'S'
}

// checkCompressed decompresses a compressed packet, at most limit bytes,
// and checks that its content is one message.
func checkCompressed(op *packet.OpaquePacket, limit int64, depth int) error {
	if depth >= maxCompressionDepth {
		return fmt.Errorf("packet grammar: compression nested more than %d deep", maxCompressionDepth)
	}
	p, err := op.Parse()
	if err != nil {
		return fmt.Errorf("packet grammar: compressed packet: %w", err)
	}
	c, ok := p.(*packet.Compressed)
	if !ok {
		return errors.New("packet grammar: compressed packet did not parse as one")
	}
	content, err := readLimited(c.LimitedBodyReader(&limit), limit)
	if err != nil {
		return fmt.Errorf("packet grammar: decompress: %w", err)
	}
	return checkGrammar(content, limit, depth+1)
}

// parseMessage consumes one Message from tokens and returns the rest.
// Recursion is bounded by maxPacketsPerLevel.
func parseMessage(tokens []byte) ([]byte, error) {
	if len(tokens) == 0 {
		return nil, errors.New("packet grammar: message expected, found none")
	}
	switch tokens[0] {
	case 'L', 'C':
		return tokens[1:], nil
	case 'S':
		return parseMessage(tokens[1:])
	default: // 'O'
		rest, err := parseMessage(tokens[1:])
		if err != nil {
			return nil, err
		}
		if len(rest) == 0 || rest[0] != 'S' {
			return nil, errors.New("packet grammar: one-pass signature without its signature packet")
		}
		return rest[1:], nil
	}
}
