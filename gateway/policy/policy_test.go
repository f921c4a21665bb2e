package policy

import (
	"errors"
	"fmt"
	"testing"
)

func TestMatchFirstRuleWins(t *testing.T) {
	p, err := New([]Rule{
		{Match: "Alice@Partner.example", Encrypt: Never},
		{Match: "partner.example", Encrypt: Required, Format: PGP},
		{Match: "*.court.example", Encrypt: Required, Format: SMIME},
		{Match: "*", Encrypt: Opportunistic},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr    string
		wantIdx int
		want    Requirement
	}{
		{"alice@partner.example", 1, Never},
		{"bob@partner.example", 2, Required},
		{"bob@sub.partner.example", 4, Opportunistic},
		{"clerk@east.court.example", 3, Required},
		{"clerk@court.example", 4, Opportunistic},
		{"x@notcourt.example", 4, Opportunistic},
		{"someone@else.example", 4, Opportunistic},
	}
	for _, c := range cases {
		idx, r := p.Match(c.addr)
		if idx != c.wantIdx || r.Encrypt != c.want {
			t.Errorf("Match(%q) = %d %s, want %d %s", c.addr, idx, r.Encrypt, c.wantIdx, c.want)
		}
	}
}

func TestMatchDefaultIsOpportunistic(t *testing.T) {
	p, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	idx, r := p.Match("a@b.example")
	if idx != 0 || r.Encrypt != Opportunistic || r.Format != Auto {
		t.Fatalf("default rule = %d %+v", idx, r)
	}
}

func TestNewRejectsBadRules(t *testing.T) {
	for _, r := range []Rule{
		{Match: "*", Encrypt: "maybe"},
		{Match: "*", Encrypt: Required, Format: "pem"},
		{Match: "", Encrypt: Required},
		{Match: "a@b@c", Encrypt: Required},
	} {
		if _, err := New([]Rule{r}); err == nil {
			t.Errorf("New(%+v) accepted a bad rule", r)
		}
	}
}

func TestDecide(t *testing.T) {
	lookupErr := errors.New("database is locked")
	req := func(f Format) Rule { return Rule{Match: "*", Encrypt: Required, Format: f} }
	opp := func(f Format) Rule { return Rule{Match: "*", Encrypt: Opportunistic, Format: f} }
	never := Rule{Match: "*", Encrypt: Never, Format: Auto}
	cases := []struct {
		name   string
		rule   Rule
		lookup Lookup
		action Action
		format Format
	}{
		{"required+pgp key", req(Auto), Lookup{PGP: true}, Encrypt, PGP},
		{"required no key", req(Auto), Lookup{}, Reject, ""},
		{"required lookup error", req(Auto), Lookup{Err: lookupErr}, Defer, ""},
		{"required pgp only has smime", req(PGP), Lookup{SMIME: true}, Reject, ""},
		{"required smime has smime", req(SMIME), Lookup{SMIME: true, PGP: true}, Encrypt, SMIME},
		{"auto both prefers pgp", req(Auto), Lookup{SMIME: true, PGP: true}, Encrypt, PGP},
		{"auto both prefer smime", req(Auto), Lookup{SMIME: true, PGP: true, Prefer: SMIME}, Encrypt, SMIME},
		{"auto smime only", opp(Auto), Lookup{SMIME: true}, Encrypt, SMIME},
		{"opportunistic key", opp(Auto), Lookup{PGP: true}, Encrypt, PGP},
		{"opportunistic no key", opp(Auto), Lookup{}, Plain, ""},
		{"opportunistic lookup error fails closed", opp(Auto), Lookup{Err: lookupErr}, Defer, ""},
		{"opportunistic pgp-only with smime", opp(PGP), Lookup{SMIME: true}, Plain, ""},
		{"never with key", never, Lookup{PGP: true}, Plain, ""},
		{"never with lookup error", never, Lookup{Err: lookupErr}, Plain, ""},
		{"required smime status unknown defers", req(Auto), Lookup{SMIMEUnknown: true}, Defer, ""},
		{"opportunistic smime status unknown defers", opp(SMIME), Lookup{SMIMEUnknown: true}, Defer, ""},
		{"smime unknown but pgp usable", req(Auto), Lookup{SMIMEUnknown: true, PGP: true}, Encrypt, PGP},
		{"pgp-only rule ignores smime status", opp(PGP), Lookup{SMIMEUnknown: true}, Plain, ""},
	}
	for _, c := range cases {
		d := Decide(c.rule, c.lookup)
		if d.Action != c.action || d.Format != c.format {
			t.Errorf("%s: Decide = %s/%s, want %s/%s", c.name, d.Action, d.Format, c.action, c.format)
		}
		if d.Reason == "" {
			t.Errorf("%s: empty reason", c.name)
		}
	}
}

func TestNeedsLookup(t *testing.T) {
	if NeedsLookup(Rule{Encrypt: Never}) || !NeedsLookup(Rule{Encrypt: Opportunistic}) || !NeedsLookup(Rule{Encrypt: Required}) {
		t.Fatal("NeedsLookup wrong")
	}
}

func BenchmarkMatchAndDecide(b *testing.B) {
	rules := []Rule{{Match: "alice@partner.example", Encrypt: Never}}
	for i := 0; i < 20; i++ {
		rules = append(rules, Rule{Match: fmt.Sprintf("d%d.example", i), Encrypt: Required})
	}
	rules = append(rules, Rule{Match: "*", Encrypt: Opportunistic})
	p, err := New(rules)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_, r := p.Match("someone@d19.example")
		if d := Decide(r, Lookup{PGP: true}); d.Action != Encrypt {
			b.Fatal(d)
		}
	}
}
