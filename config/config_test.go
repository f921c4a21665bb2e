package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

const examplePath = "../deploy/sealgate.example.toml"

func TestDefaultValidates(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	if !reflect.DeepEqual(c.SMTP.Networks, want) {
		t.Errorf("Networks = %v, want %v", c.SMTP.Networks, want)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"data_dir", c.DataDir, "sealgate-data"},
		{"database", c.Database, ""},
		{"smtp.listen", c.SMTP.Listen, "127.0.0.1:10025"},
		{"smtp.upstream", c.SMTP.Upstream, "127.0.0.1:10026"},
		{"smtp.max_message_bytes", c.SMTP.MaxMessageBytes, int64(52428800)},
		{"smtp.max_recipients", c.SMTP.MaxRecipients, 100},
		{"smtp.max_line_length", c.SMTP.MaxLineLength, 8192},
		{"smtp.max_header_bytes", c.SMTP.MaxHeaderBytes, 1048576},
		{"smtp.max_connections", c.SMTP.MaxConnections, 200},
		{"smtp.command_timeout", c.SMTP.CommandTimeout.Duration, 5 * time.Minute},
		{"smtp.data_timeout", c.SMTP.DataTimeout.Duration, 3 * time.Minute},
		{"smtp.write_timeout", c.SMTP.WriteTimeout.Duration, 5 * time.Minute},
		{"smtp.upstream_tls", c.SMTP.UpstreamTLS, "opportunistic"},
		{"smtp.upstream_timeout", c.SMTP.UpstreamTimeout.Duration, 2 * time.Minute},
		{"smtp.spool_memory_bytes", c.SMTP.SpoolMemoryBytes, int64(1048576)},
		{"http.listen", c.HTTP.Listen, "127.0.0.1:8080"},
		{"directory.domains", len(c.Directory.Domains), 0},
		{"smime.trust_roots", len(c.SMIME.TrustRoots), 0},
		{"pgp.protect_headers", c.ProtectHeaders(), true},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
		{"policy", len(c.Policy), 0},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if c.SMTP.Hostname == "" {
		t.Error("hostname is empty")
	}
}

func TestEmptyFileIsDefault(t *testing.T) {
	c, err := Parse(nil, "empty.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("empty file gives %+v, want Default()", c)
	}
}

func TestExampleLoads(t *testing.T) {
	c, err := Load(examplePath)
	if err != nil {
		t.Fatalf("Load(%s):\n%v", examplePath, err)
	}
	if got, want := c.Directory.Domains, []string{"example.com"}; !reflect.DeepEqual(got, want) {
		t.Errorf("directory.domains = %q, want %q", got, want)
	}
	wantPolicy := []PolicyRule{
		{Match: "lawfirm-partner.example", Encrypt: EncryptRequired, Format: FormatAuto, Prefer: FormatPGP},
		{Match: "*", Encrypt: EncryptOpportunistic, Format: FormatAuto},
	}
	if !reflect.DeepEqual(c.Policy, wantPolicy) {
		t.Errorf("policy = %+v, want %+v", c.Policy, wantPolicy)
	}
	// Apart from the examples for domains and policy, the example file shows
	// the defaults; a difference means the file or Default() drifted.
	c.Directory.Domains = []string{}
	c.Policy = []PolicyRule{}
	if d := Default(); !reflect.DeepEqual(c, d) {
		t.Errorf("example differs from Default():\nexample %+v\ndefault %+v", c, d)
	}
}

// Every key of the schema is documented in the example, set or commented out.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range schemaKeys(reflect.TypeFor[Config]()) {
		re := regexp.MustCompile(`(?m)^#? *` + regexp.QuoteMeta(key) + ` *=`)
		if !re.Match(data) {
			t.Errorf("%s does not document key %q", examplePath, key)
		}
	}
}

// schemaKeys lists the leaf key names of a struct type (without their table).
func schemaKeys(t reflect.Type) []string {
	var keys []string
	for name, i := range tomlFields(t) {
		ft := t.Field(i).Type
		switch {
		case isTable(ft):
			keys = append(keys, schemaKeys(ft)...)
		case ft.Kind() == reflect.Slice && isTable(ft.Elem()):
			keys = append(keys, schemaKeys(ft.Elem())...)
		default:
			keys = append(keys, name)
		}
	}
	return keys
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want an os.ErrNotExist error", err)
	}
}

func TestUnknownKeys(t *testing.T) {
	tests := []struct {
		name, toml, want string
	}{
		{"in a table", "[smtp]\nlistenn = \"127.0.0.1:25\"\n",
			`t.toml:2:12: unknown key smtp.listenn (did you mean "listen"?)`},
		{"top level", "data-dir = \"x\"\n",
			`t.toml:1:13: unknown key data-dir (did you mean "data_dir"?)`},
		{"unknown table", "\n[smtpd]\nlisten = \"x\"\n",
			`t.toml:2: unknown key smtpd (did you mean "smtp"?)`},
		{"no suggestion", "[log]\ncolour = true\n",
			`t.toml:2:10: unknown key log.colour`},
		{"case matters", "[log]\nLevel = \"info\"\n",
			`t.toml:2:10: unknown key log.Level (did you mean "level"?)`},
		{"in a policy rule", "[[policy]]\nmatch = \"*\"\nencrypt = \"never\"\n\n[[policy]]\nmatch = \"x.example\"\nencrypt = \"never\"\nformt = \"pgp\"\n",
			`t.toml:5:1: unknown key policy[1].formt (did you mean "format"?)`},
		{"networks is not a key", "[smtp]\nnetworks = []\n",
			`t.toml:2:13: unknown key smtp.networks`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.toml), "t.toml")
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error:\n%v\nwant a line:\n%s", err, tt.want)
			}
		})
	}
}

// One file with many mistakes: every one is reported, each with its place,
// in file order.
func TestEveryProblemReported(t *testing.T) {
	const file = `data_dir = "data"
databse = "postgres://x"

[smtp]
listen = "127.0.0.1"
upstream = ":10026"
max_recipients = "100"
max_connections = 0
data_timeout = "3 minutes"
command_timeout = "-1s"
allowed_networks = ["10.0.0.0/8", "10.0.0.300", "::1"]
tls_key = "key.pem"

[http]
listen = "127.0.0.1:99999"

[directory]
domains = ["Example.COM", "not a domain"]

[log]
level = "verbose"

[[policy]]
match = "*"
encrypt = "opportunistic"

[[policy]]
match = "lawfirm-partner.example"
encrypt = "maybe"
format = ""
`
	want := []string{
		`bad.toml:2:12: unknown key databse (did you mean "database"?)`,
		`bad.toml:4: smtp.tls_cert: must be set when smtp.tls_key is set (STARTTLS needs both)`,
		`bad.toml:5:11: smtp.listen: must be host:port, like "127.0.0.1:10025" or "[::1]:10025" (got "127.0.0.1")`,
		`bad.toml:6:13: smtp.upstream: needs a host before the port (got ":10026")`,
		`bad.toml:7:19: smtp.max_recipients: must be an integer (got a string)`,
		`bad.toml:8:19: smtp.max_connections: must be greater than 0 (0 does not mean unlimited)`,
		`bad.toml:9:17: smtp.data_timeout: invalid duration "3 minutes": write a number and a unit, like "90s", "5m" or "1h30m"`,
		`bad.toml:10:20: smtp.command_timeout: must be greater than 0 (got -1s)`,
		`bad.toml:11:21: smtp.allowed_networks[1]: not an IP address or CIDR network like "192.0.2.0/24" (got "10.0.0.300")`,
		`bad.toml:12:12: smtp.tls_key: cannot read file: stat key.pem: no such file or directory`,
		`bad.toml:15:11: http.listen: port must be a number from 1 to 65535 (got "99999")`,
		`bad.toml:18:12: directory.domains[1]: "not a domain" is not a valid domain name: idna: disallowed rune U+0020`,
		`bad.toml:21:10: log.level: must be one of debug, info, warn, error (got "verbose")`,
		`bad.toml:27:1: policy[1].match: this rule never applies: policy[0] (match = "*") comes first and matches every recipient it matches`,
		`bad.toml:27:1: policy[1].encrypt: must be one of required, opportunistic, never (got "maybe")`,
	}
	dir := t.TempDir()
	t.Chdir(dir) // tls_key is relative: it must not exist
	path := "bad.toml"
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if c != nil {
		t.Error("Load returned a Config along with errors")
	}
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Load error is %T (%v), want *Errors", err, err)
	}
	got := strings.Split(err.Error(), "\n")
	if len(got) != len(want) || len(errs.Problems) != len(want) {
		t.Errorf("got %d lines, %d problems; want %d", len(got), len(errs.Problems), len(want))
	}
	for i := range max(len(got), len(want)) {
		g, w := "", ""
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("line %d:\n got %s\nwant %s", i+1, g, w)
		}
	}
}

func TestSyntaxErrorHasPosition(t *testing.T) {
	_, err := Parse([]byte("data_dir = \"x\"\n[smtp]\nlisten = \n"), "syntax.toml")
	var errs *Errors
	if !errors.As(err, &errs) || len(errs.Problems) != 1 {
		t.Fatalf("want one problem, got %v", err)
	}
	p := errs.Problems[0]
	if p.Line != 3 || p.Column == 0 {
		t.Errorf("position = %d:%d, want line 3 and a column", p.Line, p.Column)
	}
	if !strings.HasPrefix(err.Error(), "syntax.toml:3:") || !strings.Contains(err.Error(), "syntax: ") {
		t.Errorf("error %q does not start with syntax.toml:3: and say syntax", err)
	}
}

func TestDuplicateKeyIsSyntaxError(t *testing.T) {
	_, err := Parse([]byte("[log]\nlevel = \"info\"\nlevel = \"debug\"\n"), "dup.toml")
	if err == nil || !strings.HasPrefix(err.Error(), "dup.toml:3:") {
		t.Errorf("error = %v, want one at dup.toml:3", err)
	}
}

func TestWrongShapes(t *testing.T) {
	tests := []struct{ toml, want string }{
		{"smtp = 5\n", `s.toml:1:8: smtp: must be a table (got an integer)`},
		{"policy = \"*\"\n", `s.toml:1:11: policy: must be an array of tables, written [[policy]] (got a string)`},
		{"[smtp]\nallowed_networks = \"10.0.0.0/8\"\n", `s.toml:2:21: smtp.allowed_networks: must be an array of strings (got a string)`},
		{"[smtp]\nallowed_networks = [\"10.0.0.0/8\", 10]\n", `s.toml:2:21: smtp.allowed_networks: must be an array of strings (got an array containing an integer)`},
		{"[smtp]\nmax_message_bytes = 5e7\n", `s.toml:2:21: smtp.max_message_bytes: must be an integer (got a float)`},
		{"[pgp]\nprotect_headers = \"no\"\n", `s.toml:2:20: pgp.protect_headers: must be a boolean (true or false) (got a string)`},
		{"[smtp]\ndata_timeout = [1]\n", `s.toml:2:17: smtp.data_timeout: must be a duration string like "5m" (got an array)`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.toml), "s.toml")
		if err == nil || err.Error() != tt.want {
			t.Errorf("Parse(%q):\n got %v\nwant %s", tt.toml, err, tt.want)
		}
	}
}

func TestInlinePolicyArray(t *testing.T) {
	c, err := Parse([]byte(`policy = [{match = "A.Example", encrypt = "required"}, {match = "*", encrypt = "never", format = "pgp"}]`), "i.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := []PolicyRule{{"a.example", "required", "auto", ""}, {"*", "never", "pgp", ""}}
	if !reflect.DeepEqual(c.Policy, want) {
		t.Errorf("policy = %+v, want %+v", c.Policy, want)
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		text string
		want time.Duration
		ok   bool
	}{
		{"90s", 90 * time.Second, true},
		{"5m", 5 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"-5m", -5 * time.Minute, true}, // parses; validation rejects it
		{"300", 0, false},
		{"5 minutes", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.text))
		if (err == nil) != tt.ok || d.Duration != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v, ok %v", tt.text, d.Duration, err, tt.want, tt.ok)
		}
		if tt.ok {
			text, err := d.MarshalText()
			var back Duration
			if err != nil || back.UnmarshalText(text) != nil || back != d {
				t.Errorf("round trip of %q gave %q, %v", tt.text, text, err)
			}
		}
	}

	c, err := Parse([]byte("[smtp]\ndata_timeout = \"45s\"\nupstream_timeout = \"1h\"\n"), "d.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.SMTP.DataTimeout.Duration != 45*time.Second || c.SMTP.UpstreamTimeout.Duration != time.Hour {
		t.Errorf("durations = %v, %v", c.SMTP.DataTimeout, c.SMTP.UpstreamTimeout)
	}
	for _, bad := range []string{`"0s"`, `"-1m"`} {
		_, err := Parse([]byte("[smtp]\nwrite_timeout = "+bad+"\n"), "d.toml")
		if err == nil || !strings.Contains(err.Error(), "smtp.write_timeout: must be greater than 0") {
			t.Errorf("write_timeout = %s: error %v", bad, err)
		}
	}
}

func TestProtectHeaders(t *testing.T) {
	off, on := false, true
	tests := []struct {
		c    *Config
		want bool
	}{
		{nil, true},
		{&Config{}, true},
		{&Config{PGP: PGP{ProtectHeaders: &off}}, false},
		{&Config{PGP: PGP{ProtectHeaders: &on}}, true},
	}
	for i, tt := range tests {
		if got := tt.c.ProtectHeaders(); got != tt.want {
			t.Errorf("case %d: ProtectHeaders() = %v", i, got)
		}
	}
	c, err := Parse([]byte("[pgp]\nprotect_headers = false\n"), "p.toml")
	if err != nil || c.ProtectHeaders() {
		t.Errorf("protect_headers = false: %v, %v", c.ProtectHeaders(), err)
	}
}

func TestProblemFormat(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{File: "f", Line: 3, Column: 7, Key: "k", Message: "m"}, "f:3:7: k: m"},
		{Problem{File: "f", Line: 3, Key: "k", Message: "m"}, "f:3: k: m"},
		{Problem{File: "f", Key: "k", Message: "m"}, "f: k: m"},
		{Problem{Key: "k", Message: "m"}, "k: m"},
		{Problem{Line: 2, Message: "m"}, "line 2: m"},
	}
	for _, tt := range tests {
		if got := tt.p.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.p, got, tt.want)
		}
	}
	err := error(&Errors{Problems: []Problem{{Key: "a", Message: "x"}, {Key: "b", Message: "y"}}})
	var p Problem
	if !errors.As(err, &p) || p.Key != "a" {
		t.Errorf("errors.As(Problem) = %+v", p)
	}
}
