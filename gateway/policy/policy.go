// Package policy decides, per recipient, whether mail is encrypted, sent in
// plaintext, refused or deferred. Decide is a pure function of the matching
// rule and the directory's answer so it can be table-tested.
package policy

import (
	"fmt"
	"strings"
)

// Requirement is a rule's encryption requirement.
type Requirement string

const (
	Required      Requirement = "required"
	Opportunistic Requirement = "opportunistic"
	Never         Requirement = "never"
)

// Format is the message format a rule allows.
type Format string

const (
	Auto  Format = "auto"
	PGP   Format = "pgp"
	SMIME Format = "smime"
)

// Rule is one [[policy]] entry.
type Rule struct {
	Match   string
	Encrypt Requirement
	Format  Format
	Prefer  Format // with Format Auto and both kinds of key: PGP (default) or SMIME
}

// DefaultRule applies to recipients that no configured rule matches.
var defaultRule = Rule{Match: "*", Encrypt: Opportunistic, Format: Auto}

// Policy is an ordered list of rules; the first match wins.
type Policy struct {
	rules []Rule
}

// New validates rules and returns the policy.
func New(rules []Rule) (*Policy, error) {
	p := &Policy{rules: make([]Rule, 0, len(rules))}
	for i, r := range rules {
		r.Match = strings.ToLower(strings.TrimSpace(r.Match))
		if r.Format == "" {
			r.Format = Auto
		}
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("policy: rule %d: %w", i+1, err)
		}
		p.rules = append(p.rules, r)
	}
	return p, nil
}

func (r Rule) validate() error {
	switch r.Encrypt {
	case Required, Opportunistic, Never:
	default:
		return fmt.Errorf("encrypt must be required, opportunistic or never, not %q", r.Encrypt)
	}
	switch r.Format {
	case Auto, PGP, SMIME:
	default:
		return fmt.Errorf("format must be auto, pgp or smime, not %q", r.Format)
	}
	switch r.Prefer {
	case "", PGP, SMIME:
	default:
		return fmt.Errorf("prefer must be pgp or smime, not %q", r.Prefer)
	}
	if r.Match == "" || strings.Count(r.Match, "@") > 1 || strings.ContainsAny(r.Match, " \t") {
		return fmt.Errorf("bad match %q", r.Match)
	}
	return nil
}

// Match returns the first rule matching the normalised address and its
// 1-based number in the configuration; 0 means the built-in default rule.
func (p *Policy) Match(address string) (int, Rule) {
	address = strings.ToLower(address)
	domain := address[strings.LastIndexByte(address, '@')+1:]
	for i, r := range p.rules {
		if matches(r.Match, address, domain) {
			return i + 1, r
		}
	}
	return 0, defaultRule
}

func matches(pattern, address, domain string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.Contains(pattern, "@"):
		return pattern == address
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(domain, pattern[1:])
	default:
		return pattern == domain
	}
}

// Lookup is what the directory said about a recipient.
type Lookup struct {
	Err    error  // the lookup failed: we cannot know whether a key exists
	PGP    bool   // a usable OpenPGP key exists
	SMIME  bool   // a usable S/MIME certificate exists
	Prefer Format // which format wins when both exist (PGP when empty)
	// SMIMEUnknown: a certificate exists whose revocation status cannot
	// be established now (hard-fail): like a lookup error for S/MIME.
	SMIMEUnknown bool
}

// Action is what happens to a recipient.
type Action int

const (
	Plain   Action = iota // relay without encryption
	Encrypt               // encrypt in Decision.Format
	Reject                // 550 5.7.1 at RCPT
	Defer                 // 451 4.7.0 at RCPT: the sender retries
)

func (a Action) String() string {
	return [...]string{"plain", "encrypt", "reject", "defer"}[a]
}

// Decision is the outcome for one recipient.
type Decision struct {
	Action Action
	Format Format // PGP or SMIME when Action is Encrypt
	Reason string // for the log and the audit trail
}

// NeedsLookup reports whether Decide needs the directory's answer.
func NeedsLookup(r Rule) bool { return r.Encrypt != Never }

// Decide applies rule r to the directory's answer. It fails closed: a
// lookup error defers any recipient that might need encryption.
func Decide(r Rule, l Lookup) Decision {
	if r.Encrypt == Never {
		return Decision{Action: Plain, Reason: "policy never"}
	}
	if l.Err != nil {
		return Decision{Action: Defer, Reason: "key lookup failed"}
	}
	if f, ok := choose(r.Format, l); ok {
		return Decision{Action: Encrypt, Format: f, Reason: "key found"}
	}
	if l.SMIMEUnknown && r.Format != PGP {
		return Decision{Action: Defer, Reason: "certificate revocation status unknown"}
	}
	if r.Encrypt == Required {
		return Decision{Action: Reject, Reason: "encryption required and no usable key"}
	}
	return Decision{Action: Plain, Reason: "no usable key (opportunistic)"}
}

func choose(f Format, l Lookup) (Format, bool) {
	switch f {
	case PGP:
		return PGP, l.PGP
	case SMIME:
		return SMIME, l.SMIME
	}
	switch {
	case l.PGP && l.SMIME:
		if l.Prefer == SMIME {
			return SMIME, true
		}
		return PGP, true
	case l.PGP:
		return PGP, true
	case l.SMIME:
		return SMIME, true
	}
	return "", false
}
