package smime

import (
	"errors"
)

// Mail clients write CMS in BER: OpenSSL's and NSS's streaming encoders use
// indefinite lengths and chunked (constructed) OCTET STRINGs. encoding/asn1
// reads DER only, and pkcs7's converter is not exported, so berToDER
// re-encodes the input with definite, minimal lengths (X.690 §10.1) and
// joins constructed OCTET STRINGs (§10.2). Constructed strings under an
// implicit context tag, such as encryptedContent [0], stay constructed:
// their readers join the parts.
//
// Limits, against crafted input (reliability reference C4): nesting depth
// maxBERDepth, at most maxBERNodes elements, lengths of at most 4 octets.
const (
	maxBERDepth = 64
	maxBERNodes = 1 << 20
)

var (
	errBERTruncated = errors.New("smime: BER: truncated")
	errBERDepth     = errors.New("smime: BER: nested too deeply")
	errBERNodes     = errors.New("smime: BER: too many elements")
	errBERLength    = errors.New("smime: BER: bad length")
	errBERTrailing  = errors.New("smime: BER: trailing data")
)

type berNode struct {
	ident    []byte // identifier octets
	prim     []byte // contents, when primitive
	children []*berNode
	length   int // DER length of the contents, set by measure
}

type berParser struct {
	nodes int
}

func berToDER(b []byte) ([]byte, error) {
	var p berParser
	n, rest, err := p.parse(b, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, errBERTrailing
	}
	return n.appendTo(make([]byte, 0, n.measure())), nil
}

func (p *berParser) parse(b []byte, depth int) (*berNode, []byte, error) {
	if depth > maxBERDepth {
		return nil, nil, errBERDepth
	}
	if p.nodes++; p.nodes > maxBERNodes {
		return nil, nil, errBERNodes
	}
	if len(b) < 2 {
		return nil, nil, errBERTruncated
	}
	i := 1
	if b[0]&0x1f == 0x1f { // high tag number form
		for {
			if i >= len(b) || i > 5 {
				return nil, nil, errBERTruncated
			}
			i++
			if b[i-1]&0x80 == 0 {
				break
			}
		}
	}
	if i >= len(b) {
		return nil, nil, errBERTruncated
	}
	n := &berNode{ident: b[:i]}
	constructed := b[0]&0x20 != 0
	l := int(b[i])
	i++
	var content, rest []byte
	switch {
	case l == 0x80: // indefinite: children up to the end-of-contents octets
		if !constructed {
			return nil, nil, errBERLength
		}
		body := b[i:]
		for {
			if len(body) < 2 {
				return nil, nil, errBERTruncated
			}
			if body[0] == 0 && body[1] == 0 {
				rest = body[2:]
				break
			}
			child, r, err := p.parse(body, depth+1)
			if err != nil {
				return nil, nil, err
			}
			n.children = append(n.children, child)
			body = r
		}
	default:
		if l > 0x80 {
			k := l & 0x7f
			if k > 4 || i+k > len(b) {
				return nil, nil, errBERLength
			}
			l = 0
			for _, c := range b[i : i+k] {
				l = l<<8 | int(c)
			}
			i += k
		}
		if l > len(b)-i {
			return nil, nil, errBERTruncated
		}
		content, rest = b[i:i+l], b[i+l:]
		if !constructed {
			n.prim = content
			break
		}
		for len(content) > 0 {
			child, r, err := p.parse(content, depth+1)
			if err != nil {
				return nil, nil, err
			}
			n.children = append(n.children, child)
			content = r
		}
	}
	if b[0] == 0x24 { // constructed OCTET STRING: DER wants it primitive
		if err := n.flatten(); err != nil {
			return nil, nil, err
		}
	}
	return n, rest, nil
}

// flatten turns a constructed OCTET STRING into a primitive one. Its
// children were parsed first, so nested constructed parts are primitive
// already.
func (n *berNode) flatten() error {
	size := 0
	for _, c := range n.children {
		if len(c.ident) != 1 || c.ident[0] != 0x04 {
			return errors.New("smime: BER: constructed OCTET STRING holds something else")
		}
		size += len(c.prim)
	}
	prim := make([]byte, 0, size)
	for _, c := range n.children {
		prim = append(prim, c.prim...)
	}
	n.ident, n.prim, n.children = []byte{0x04}, prim, nil
	return nil
}

// measure sets n.length and returns the size of n's DER encoding.
func (n *berNode) measure() int {
	if n.children == nil {
		n.length = len(n.prim)
	} else {
		n.length = 0
		for _, c := range n.children {
			n.length += c.measure()
		}
	}
	return len(n.ident) + lengthSize(n.length) + n.length
}

func (n *berNode) appendTo(out []byte) []byte {
	out = append(out, n.ident...)
	out = appendLength(out, n.length)
	if n.children == nil {
		return append(out, n.prim...)
	}
	for _, c := range n.children {
		out = c.appendTo(out)
	}
	return out
}

func lengthSize(l int) int {
	if l < 0x80 {
		return 1
	}
	s := 1
	for ; l > 0; l >>= 8 {
		s++
	}
	return s
}

func appendLength(out []byte, l int) []byte {
	if l < 0x80 {
		return append(out, byte(l))
	}
	k := lengthSize(l) - 1
	out = append(out, 0x80|byte(k))
	for i := k - 1; i >= 0; i-- {
		out = append(out, byte(l>>(8*i)))
	}
	return out
}
