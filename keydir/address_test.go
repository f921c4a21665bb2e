package keydir

import (
	"strings"
	"testing"
)

func TestNormalizeAddress(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	tests := []struct {
		in      string
		want    string
		wantErr string // substring of the error; "" means success
	}{
		{in: "alice@example.org", want: "alice@example.org"},
		{in: "  Alice@Example.ORG  ", want: "alice@example.org"},
		{in: "<ALICE@Corp.Example>", want: "alice@corp.example"},
		{in: " < bob@example.org > ", want: "bob@example.org"},
		{in: "alice@example.org.", want: "alice@example.org"},
		{in: "alice@Bücher.Example", want: "alice@xn--bcher-kva.example"},
		{in: "ÄRGER@example.de", want: "ärger@example.de"},
		{in: "\u212Aevin@example.org", wantErr: "lower-cases to an ASCII letter"}, // KELVIN SIGN, not "k"
		{in: "alice@xn--bcher-kva.example", want: "alice@xn--bcher-kva.example"},
		{in: "alice@XN--BCHER-KVA.EXAMPLE", want: "alice@xn--bcher-kva.example"},
		{in: "ÄRGER@example.org", want: "ärger@example.org"},
		{in: "ΣΊΣΥΦΟΣ@example.gr", want: "σίσυφοσ@example.gr"}, // strings.ToLower maps every Σ to σ
		{in: "first.last+tag@example.org", want: "first.last+tag@example.org"},
		{in: "alice@localhost", want: "alice@localhost"},
		{in: strings.Repeat("a", 64) + "@example.org", want: strings.Repeat("a", 64) + "@example.org"},

		{in: "", wantErr: "keydir: empty address"},
		{in: "   ", wantErr: "keydir: empty address"},
		{in: "<>", wantErr: "keydir: empty address"},
		{in: "alice", wantErr: "exactly one '@', found 0"},
		{in: "a@b@example.org", wantErr: "exactly one '@', found 2"},
		{in: `"a@b"@example.org`, wantErr: "exactly one '@', found 2"},
		{in: "@example.org", wantErr: "empty local part"},
		{in: "alice@", wantErr: "empty domain"},
		{in: "alice@.", wantErr: "empty domain"},
		{in: "alice@example..org", wantErr: "empty label"},
		{in: "alice smith@example.org", wantErr: "contains a space"},
		{in: "alice@exa mple.org", wantErr: "contains a space"},
		{in: "alice\u00a0@example.org", wantErr: "contains a space"},
		{in: "alice\x00@example.org", wantErr: "control character"},
		{in: "alice@example.org\r\nRCPT TO:<x@y>", wantErr: "control character"},
		{in: "ali\x7fce@example.org", wantErr: "control character"},
		{in: "alice@exam\tple.org", wantErr: "control character"},
		{in: "\xff@example.org", wantErr: "invalid UTF-8"},
		{in: "<alice@example.org", wantErr: "unbalanced angle brackets"},
		{in: "Alice <alice@example.org>", wantErr: "contains a space"},
		{in: "alice@[192.0.2.1]", wantErr: "address literals"},
		{in: "alice@exa_mple.org", wantErr: "invalid domain"},
		{in: "alice@-example.org", wantErr: "invalid domain"},
		{in: strings.Repeat("a", 65) + "@example.org", wantErr: "local part is longer than 64"},
		{in: strings.Repeat("ä", 33) + "@example.org", wantErr: "local part is longer than 64"}, // 66 octets
		{in: "alice@" + long63 + "a.example", wantErr: "label is longer than 63"},
		{in: "alice@" + strings.Repeat(long63+".", 4) + "org", wantErr: "domain is longer than 255"},
		{in: strings.Repeat("a", 64) + "@" + strings.Repeat(long63+".", 3) + "org", wantErr: "longer than 254"},
	}
	for _, tt := range tests {
		got, err := NormalizeAddress(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("NormalizeAddress(%q) = %q, %v; want %q, nil", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("NormalizeAddress(%q) = %q, nil; want error containing %q", tt.in, got, tt.wantErr)
			continue
		}
		if !strings.HasPrefix(err.Error(), "keydir: ") || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("NormalizeAddress(%q) error = %q; want it to start with \"keydir: \" and contain %q", tt.in, err, tt.wantErr)
		}
	}
}

// The same address in its U-label and A-label forms, in any case, must
// normalise identically, or one form would miss keys published under the
// other (reliability reference K2).
func TestNormalizeAddressFormsAgree(t *testing.T) {
	forms := []string{"Alice@Bücher.Example", "alice@BÜCHER.example.", "<alice@xn--bcher-kva.example>", "ALICE@XN--BCHER-KVA.EXAMPLE"}
	want, err := NormalizeAddress(forms[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range forms[1:] {
		got, err := NormalizeAddress(f)
		if err != nil || got != want {
			t.Errorf("NormalizeAddress(%q) = %q, %v; want %q", f, got, err, want)
		}
	}
}
