package endpoint

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
)

// The armor of an encrypted message (RFC 9580 §6.2).
const (
	messageBegin = "-----BEGIN PGP MESSAGE-----"
	messageEnd   = "-----END PGP MESSAGE-----"
)

// IsArmoredMessage reports whether data, less surrounding white space,
// begins with the armor line of an OpenPGP message.
func IsArmoredMessage(data []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(messageBegin))
}

// dearmorMessage decodes data that must be exactly one armored "PGP
// MESSAGE" and nothing else but white space: no text before or after it
// (EFAIL direct exfiltration hides markup there; reliability.md M8), one
// block only, every line in its place, and the CRC-24 line, when present,
// correct. go-crypto's armor.Decode is lenient on all of these (it skips
// leading garbage, ignores the checksum and accepts a missing END line),
// which a decrypting endpoint must not be.
func dearmorMessage(data []byte) ([]byte, error) {
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	for i, l := range lines {
		lines[i] = bytes.TrimRight(l, " \t\r")
	}
	if len(lines) < 3 || string(lines[0]) != messageBegin || string(lines[len(lines)-1]) != messageEnd {
		return nil, errors.New("armor: not exactly one PGP MESSAGE block")
	}
	lines = lines[1 : len(lines)-1]
	// Armor headers (RFC 9580 §6.2.2) up to the blank line.
	i := 0
	for ; i < len(lines) && len(lines[i]) > 0; i++ {
		if !bytes.Contains(lines[i], []byte(": ")) {
			return nil, fmt.Errorf("armor: malformed header line %q", lines[i])
		}
	}
	if i == len(lines) {
		return nil, errors.New("armor: no blank line after the headers")
	}
	lines = lines[i+1:]
	var b64 []byte
	var checksum []byte
	for j, l := range lines {
		switch {
		case len(l) == 5 && l[0] == '=' && j == len(lines)-1:
			checksum = l[1:]
		case len(l) == 0 || len(l) > 76 || bytes.HasPrefix(l, []byte("-")):
			return nil, fmt.Errorf("armor: unexpected line %q", l)
		default:
			b64 = append(b64, l...)
		}
	}
	body := make([]byte, base64.StdEncoding.DecodedLen(len(b64)))
	n, err := base64.StdEncoding.Decode(body, b64)
	if err != nil {
		return nil, fmt.Errorf("armor: %w", err)
	}
	body = body[:n]
	if checksum != nil {
		var sum [3]byte
		if m, err := base64.StdEncoding.Decode(sum[:], checksum); err != nil || m != 3 {
			return nil, errors.New("armor: malformed checksum line")
		}
		if got := crc24(body); got != uint32(sum[0])<<16|uint32(sum[1])<<8|uint32(sum[2]) {
			return nil, errors.New("armor: checksum mismatch")
		}
	}
	return body, nil
}

// crc24 is the armor checksum (RFC 9580 §6.1). Bitwise: messages are
// read once, and the cost is small beside decryption.
func crc24(data []byte) uint32 {
	const (
		init = 0xb704ce
		poly = 0x1864cfb
	)
	crc := uint32(init)
	for _, b := range data {
		crc ^= uint32(b) << 16
		for range 8 {
			crc <<= 1
			if crc&0x1000000 != 0 {
				crc ^= poly
			}
		}
	}
	return crc & 0xffffff
}
