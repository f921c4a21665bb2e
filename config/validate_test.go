package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// problemsOf validates c and returns "key: message" for each problem.
func problemsOf(t *testing.T, c *Config) []string {
	t.Helper()
	err := c.Validate()
	if err == nil {
		return nil
	}
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Validate error is %T, want *Errors", err)
	}
	return strings.Split(errs.Error(), "\n")
}

func TestNetworks(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" = error
	}{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"192.0.2.7", "192.0.2.7/32"},
		{"10.1.2.3/8", "10.0.0.0/8"}, // host bits cleared
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"::1", "::1/128"},
		{"2001:DB8::1/64", "2001:db8::/64"},
		{"fe80::1%eth0", ""},
		{"10.0.0.300", ""},
		{"10.0.0.0/33", ""},
		{"::1/129", ""},
		{"example.com", ""},
		{"", ""},
	}
	for _, tt := range tests {
		c := Default()
		c.SMTP.AllowedNetworks = []string{tt.in}
		problems := problemsOf(t, c)
		if tt.want == "" {
			if len(problems) != 1 || !strings.HasPrefix(problems[0], "smtp.allowed_networks[0]: ") {
				t.Errorf("%q: problems %q, want one about smtp.allowed_networks[0]", tt.in, problems)
			}
			continue
		}
		if problems != nil {
			t.Errorf("%q: %q", tt.in, problems)
			continue
		}
		if want := []netip.Prefix{netip.MustParsePrefix(tt.want)}; !reflect.DeepEqual(c.SMTP.Networks, want) {
			t.Errorf("%q: Networks = %v, want %v", tt.in, c.SMTP.Networks, want)
		}
	}

	c := Default()
	c.SMTP.AllowedNetworks = nil
	if p := problemsOf(t, c); len(p) != 1 || !strings.HasPrefix(p[0], "smtp.allowed_networks: must list at least one network") {
		t.Errorf("empty list: %q", p)
	}

	c, err := Parse([]byte("[smtp]\nallowed_networks = [\"192.0.2.0/24\", \"2001:db8::5\"]\n"), "n.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::5/128")}
	if !reflect.DeepEqual(c.SMTP.Networks, want) {
		t.Errorf("parsed Networks = %v, want %v", c.SMTP.Networks, want)
	}
}

func TestValidateFillsNetworks(t *testing.T) {
	c := Default()
	c.SMTP.AllowedNetworks = []string{"198.51.100.0/24"}
	c.SMTP.Networks = nil
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.SMTP.Networks) != 1 || c.SMTP.Networks[0] != netip.MustParsePrefix("198.51.100.0/24") {
		t.Errorf("Networks = %v", c.SMTP.Networks)
	}
}

func TestZeroConfigIsInvalid(t *testing.T) {
	// A zero Config must not pass: zero limits are not "unlimited".
	problems := problemsOf(t, &Config{})
	for _, key := range []string{"data_dir", "smtp.listen", "smtp.upstream", "smtp.allowed_networks",
		"smtp.hostname", "smtp.max_message_bytes", "smtp.max_recipients", "smtp.max_line_length",
		"smtp.max_header_bytes", "smtp.max_connections", "smtp.spool_memory_bytes",
		"smtp.command_timeout", "smtp.data_timeout", "smtp.write_timeout", "smtp.upstream_timeout",
		"smtp.upstream_tls", "http.listen", "log.level", "log.format"} {
		found := false
		for _, p := range problems {
			found = found || strings.HasPrefix(p, key+": ")
		}
		if !found {
			t.Errorf("zero Config: no problem for %s in\n%s", key, strings.Join(problems, "\n"))
		}
	}
}

func TestLimits(t *testing.T) {
	set := map[string]func(c *Config, n int){
		"smtp.max_message_bytes":  func(c *Config, n int) { c.SMTP.MaxMessageBytes = int64(n) },
		"smtp.max_recipients":     func(c *Config, n int) { c.SMTP.MaxRecipients = n },
		"smtp.max_line_length":    func(c *Config, n int) { c.SMTP.MaxLineLength = n },
		"smtp.max_header_bytes":   func(c *Config, n int) { c.SMTP.MaxHeaderBytes = n },
		"smtp.max_connections":    func(c *Config, n int) { c.SMTP.MaxConnections = n },
		"smtp.spool_memory_bytes": func(c *Config, n int) { c.SMTP.SpoolMemoryBytes = int64(n) },
	}
	for key, f := range set {
		for n, want := range map[int]string{
			0:  key + ": must be greater than 0 (0 does not mean unlimited)",
			-1: key + ": must be greater than 0 (got -1)",
		} {
			c := Default()
			f(c, n)
			if p := problemsOf(t, c); len(p) != 1 || p[0] != want {
				t.Errorf("%s = %d: %q, want %q", key, n, p, want)
			}
		}
	}
}

func TestAddresses(t *testing.T) {
	tests := []struct {
		listen, upstream string
		want             []string
	}{
		{"127.0.0.1:25", "mail.example.com:25", nil},
		{":10025", "[::1]:10026", nil},
		{"[::]:10025", "10.0.0.2:587", nil},
		{"127.0.0.1", "x:1", []string{`smtp.listen: must be host:port, like "127.0.0.1:10025" or "[::1]:10025" (got "127.0.0.1")`}},
		{"127.0.0.1:0", "x:1", []string{`smtp.listen: port must be a number from 1 to 65535 (got "0")`}},
		{"127.0.0.1:smtp", "x:65536", []string{
			`smtp.listen: port must be a number from 1 to 65535 (got "smtp")`,
			`smtp.upstream: port must be a number from 1 to 65535 (got "65536")`}},
		{"127.0.0.1:25", ":25", []string{`smtp.upstream: needs a host before the port (got ":25")`}},
		{"::1:25", "x:1", []string{`smtp.listen: must be host:port, like "127.0.0.1:10025" or "[::1]:10025" (got "::1:25")`}},
	}
	for _, tt := range tests {
		c := Default()
		c.SMTP.Listen, c.SMTP.Upstream = tt.listen, tt.upstream
		if got := problemsOf(t, c); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("listen %q upstream %q:\n got %q\nwant %q", tt.listen, tt.upstream, got, tt.want)
		}
	}
	c := Default()
	c.HTTP.Listen = "localhost:http"
	if got := problemsOf(t, c); len(got) != 1 || !strings.HasPrefix(got[0], "http.listen: port must be") {
		t.Errorf("http.listen: %q", got)
	}
}

func TestDatabase(t *testing.T) {
	for dsn, ok := range map[string]bool{
		"":                                  true,
		"postgres://sealgate@db/sealgate":   true,
		"postgresql://u:secret@db:5432/x":   true,
		"POSTGRES://u@db/x":                 true,
		"postgres:///x?host=/run/postgres":  true,
		"mysql://u:secret@db/x":             false,
		"host=db user=u password=secret":    false,
		"postgres://u:secret@db/x%zz":       false,
		"sqlite:///var/lib/sealgate/key.db": false,
	} {
		c := Default()
		c.Database = dsn
		p := problemsOf(t, c)
		if (p == nil) != ok {
			t.Errorf("database %q: problems %q", dsn, p)
		}
		if strings.Contains(strings.Join(p, ""), "secret") {
			t.Errorf("database %q: the message repeats the password: %q", dsn, p)
		}
	}
}

func TestDomains(t *testing.T) {
	c := Default()
	c.Directory.Domains = []string{"Example.COM", "bücher.example", "mail.example.org"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []string{"example.com", "xn--bcher-kva.example", "mail.example.org"}
	if !reflect.DeepEqual(c.Directory.Domains, want) {
		t.Errorf("domains = %q, want %q", c.Directory.Domains, want)
	}

	for _, bad := range []string{"", "exa mple.com", "example.com.", "*.example.com", "192.0.2.1",
		"-example.com", "under_score.example", strings.Repeat("a", 64) + ".example"} {
		c := Default()
		c.Directory.Domains = []string{bad}
		if p := problemsOf(t, c); len(p) != 1 || !strings.HasPrefix(p[0], "directory.domains[0]: ") {
			t.Errorf("domain %q: problems %q", bad, p)
		}
	}

	c = Default()
	c.Directory.Domains = []string{"example.com", "EXAMPLE.com"}
	want2 := []string{`directory.domains[1]: "example.com" is listed twice (also directory.domains[0])`}
	if p := problemsOf(t, c); !reflect.DeepEqual(p, want2) {
		t.Errorf("duplicate: %q, want %q", p, want2)
	}
}

func TestEnums(t *testing.T) {
	c := Default()
	c.Log.Level, c.Log.Format, c.SMTP.UpstreamTLS = "INFO", "xml", "yes"
	want := []string{
		`smtp.upstream_tls: must be one of none, opportunistic, required (got "yes")`,
		`log.level: must be one of debug, info, warn, error (got "INFO")`,
		`log.format: must be one of text, json (got "xml")`,
	}
	if p := problemsOf(t, c); !reflect.DeepEqual(p, want) {
		t.Errorf("got %q\nwant %q", p, want)
	}
}

func TestPolicy(t *testing.T) {
	tests := []struct {
		name  string
		rules []PolicyRule
		want  []PolicyRule // normalised, when valid
		errs  []string
	}{
		{"empty policy", nil, nil, nil},
		{"all forms",
			[]PolicyRule{
				{"Alice@Example.ORG", "required", "pgp", ""},
				{"LawFirm-Partner.example", "required", "", ""},
				{"*.Example.org", "opportunistic", "smime", ""},
				{"bücher.example", "never", "auto", ""},
				{"*", "opportunistic", "auto", ""},
			},
			[]PolicyRule{
				{"Alice@example.org", "required", "pgp", ""},
				{"lawfirm-partner.example", "required", "auto", ""},
				{"*.example.org", "opportunistic", "smime", ""},
				{"xn--bcher-kva.example", "never", "auto", ""},
				{"*", "opportunistic", "auto", ""},
			}, nil},
		{"bad encrypt and format",
			[]PolicyRule{{"example.org", "maybe", "gpg", ""}}, nil,
			[]string{
				`policy[0].encrypt: must be one of required, opportunistic, never (got "maybe")`,
				`policy[0].format: must be one of auto, pgp, smime (got "gpg")`,
			}},
		{"encrypt missing",
			[]PolicyRule{{Match: "example.org"}}, nil,
			[]string{`policy[0].encrypt: missing; must be one of required, opportunistic, never`}},
		{"match missing",
			[]PolicyRule{{Encrypt: "never"}}, nil,
			[]string{`policy[0].match: missing; must be "*", "example.org", "*.example.org" or "alice@example.org"`}},
		{"rule after * never applies",
			[]PolicyRule{{"*", "opportunistic", "", ""}, {"lawfirm-partner.example", "required", "", ""}}, nil,
			[]string{`policy[1].match: this rule never applies: policy[0] (match = "*") comes first and matches every recipient it matches`}},
		{"duplicate after normalising",
			[]PolicyRule{{"example.org", "required", "", ""}, {"EXAMPLE.org", "never", "", ""}}, nil,
			[]string{`policy[1].match: this rule never applies: policy[0] (match = "example.org") comes first and matches every recipient it matches`}},
		{"address under its domain",
			[]PolicyRule{{"example.org", "required", "", ""}, {"bob@example.org", "never", "", ""}}, nil,
			[]string{`policy[1].match: this rule never applies: policy[0] (match = "example.org") comes first and matches every recipient it matches`}},
		{"subdomain under wildcard",
			[]PolicyRule{{"*.example.org", "required", "", ""}, {"mail.example.org", "never", "", ""}}, nil,
			[]string{`policy[1].match: this rule never applies: policy[0] (match = "*.example.org") comes first and matches every recipient it matches`}},
		{"domain is not under its own wildcard",
			[]PolicyRule{{"*.example.org", "required", "", ""}, {"a@example.org", "never", "", ""}, {"example.org", "never", "", ""}},
			[]PolicyRule{{"*.example.org", "required", "auto", ""}, {"a@example.org", "never", "auto", ""}, {"example.org", "never", "auto", ""}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Policy = tt.rules
			got := problemsOf(t, c)
			if !reflect.DeepEqual(got, tt.errs) {
				t.Errorf("problems:\n got %q\nwant %q", got, tt.errs)
			}
			if tt.errs == nil && !reflect.DeepEqual(c.Policy, tt.want) {
				t.Errorf("policy = %+v, want %+v", c.Policy, tt.want)
			}
		})
	}
}

func TestPolicyMatchSyntax(t *testing.T) {
	for _, bad := range []string{"**", "*example.org", "example.*", "*@example.org", "@example.org",
		"alice@", "a b@example.org", "a@b@example.org", ".alice@example.org", "al..ice@example.org",
		"alice@exa mple.org", "192.0.2.1", "example.org.", " example.org",
		strings.Repeat("a", 65) + "@example.org"} {
		c := Default()
		c.Policy = []PolicyRule{{Match: bad, Encrypt: "required"}}
		if p := problemsOf(t, c); len(p) != 1 || !strings.HasPrefix(p[0], "policy[0].match: ") {
			t.Errorf("match %q: problems %q", bad, p)
		}
	}
	for _, good := range []string{"*", "a.b", "*.a.b", "o'brien+tag@example.org", "jörg@bücher.example"} {
		c := Default()
		c.Policy = []PolicyRule{{Match: good, Encrypt: "required"}}
		if p := problemsOf(t, c); p != nil {
			t.Errorf("match %q: %q", good, p)
		}
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		earlier, later string
		want           bool
	}{
		{"*", "x.example", true},
		{"*", "*", true},
		{"x.example", "*", false},
		{"x.example", "x.example", true},
		{"x.example", "y.example", false},
		{"x.example", "a@x.example", true},
		{"x.example", "a@sub.x.example", false},
		{"*.x.example", "x.example", false},
		{"*.x.example", "a@x.example", false},
		{"*.x.example", "sub.x.example", true},
		{"*.x.example", "a@sub.x.example", true},
		{"*.x.example", "*.sub.x.example", true},
		{"*.sub.x.example", "*.x.example", false},
		{"*.x.example", "notx.example", false},
		{"a@x.example", "A@x.example", true},
		{"a@x.example", "b@x.example", false},
	}
	for _, tt := range tests {
		if got := covers(tt.earlier, tt.later); got != tt.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tt.earlier, tt.later, got, tt.want)
		}
	}
}

// writeCert writes a self-signed certificate and its key as PEM files.
func writeCert(t *testing.T, dir, name string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath = filepath.Join(dir, name+".crt")
	keyPath = filepath.Join(dir, name+".key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func TestTLSCertAndKey(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir, "gw.example")
	otherCert, _ := writeCert(t, dir, "other.example")
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name, cert, key string
		want            string // prefix of the only problem; "" = valid
	}{
		{"neither", "", "", ""},
		{"both", cert, key, ""},
		{"cert only", cert, "", "smtp.tls_key: must be set when smtp.tls_cert is set"},
		{"key only", "", key, "smtp.tls_cert: must be set when smtp.tls_key is set"},
		{"mismatched pair", otherCert, key, "smtp.tls_cert: cannot be used with smtp.tls_key: "},
		{"missing cert", missing, key, "smtp.tls_cert: cannot read file: "},
		{"missing key", cert, missing, "smtp.tls_key: cannot read file: "},
		{"directory", dir, key, "smtp.tls_cert: " + dir + " is not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.SMTP.TLSCert, c.SMTP.TLSKey = tt.cert, tt.key
			p := problemsOf(t, c)
			switch {
			case tt.want == "" && p != nil:
				t.Errorf("problems %q", p)
			case tt.want != "" && (len(p) != 1 || !strings.HasPrefix(p[0], tt.want)):
				t.Errorf("problems %q, want one starting %q", p, tt.want)
			}
		})
	}
}

func TestCertificateFiles(t *testing.T) {
	dir := t.TempDir()
	ca, _ := writeCert(t, dir, "ca.example")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	c := Default()
	c.SMIME.TrustRoots = []string{ca}
	c.SMTP.UpstreamTLSCA = ca
	if p := problemsOf(t, c); p != nil {
		t.Errorf("valid CA files: %q", p)
	}

	c = Default()
	c.SMIME.TrustRoots = []string{ca, garbage, filepath.Join(dir, "missing.pem")}
	c.SMTP.UpstreamTLSCA = garbage
	want := []string{
		"smtp.upstream_tls_ca: " + garbage + " contains no PEM certificate",
		"smime.trust_roots[1]: " + garbage + " contains no PEM certificate",
		"smime.trust_roots[2]: cannot read file: ",
	}
	p := problemsOf(t, c)
	if len(p) != len(want) {
		t.Fatalf("problems %q, want %d", p, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(p[i], want[i]) {
			t.Errorf("problem %d = %q, want prefix %q", i, p[i], want[i])
		}
	}
}

func TestHostname(t *testing.T) {
	for name, ok := range map[string]bool{"gw.example.com": true, "gw": true, "": false, "gw example": false} {
		c := Default()
		c.SMTP.Hostname = name
		if p := problemsOf(t, c); (p == nil) != ok {
			t.Errorf("hostname %q: %q", name, p)
		}
	}
	c := Default()
	c.SMTP.UpstreamTLSServerName = "bad name"
	if p := problemsOf(t, c); len(p) != 1 || !strings.HasPrefix(p[0], "smtp.upstream_tls_server_name: ") {
		t.Errorf("upstream_tls_server_name: %q", p)
	}
}
