// Package config is sealgate's configuration: the TOML schema, built-in
// defaults, strict loading and validation that reports every error at once.
//
// deploy/sealgate.example.toml documents every key; keep it in step with the
// comments here. Relative paths are relative to the working directory.
package config

import (
	"fmt"
	"net/netip"
	"os"
	"time"
)

// Config is the whole configuration file.
type Config struct {
	// DataDir holds the SQLite database and runtime files.
	DataDir string `toml:"data_dir"`
	// Database is "" for SQLite in DataDir, or a postgres:// or
	// postgresql:// URL for PostgreSQL (several gateway nodes).
	Database  string       `toml:"database"`
	SMTP      SMTP         `toml:"smtp"`
	HTTP      HTTP         `toml:"http"`
	Directory Directory    `toml:"directory"`
	SMIME     SMIME        `toml:"smime"`
	PGP       PGP          `toml:"pgp"`
	Log       Log          `toml:"log"`
	Policy    []PolicyRule `toml:"policy"`
}

// SMTP configures the proxy: the listener facing the mail host and the
// relay to the upstream mail host.
type SMTP struct {
	Listen   string `toml:"listen"`   // host:port the proxy accepts mail on
	Upstream string `toml:"upstream"` // host:port of the mail host that receives processed mail
	// AllowedNetworks are the clients (CIDR or single address) allowed to
	// connect; everyone else is refused. Validation fills Networks from it.
	AllowedNetworks []string `toml:"allowed_networks"`
	Hostname        string   `toml:"hostname"` // our name in the greeting and in EHLO upstream

	// Limits. Zero is never "unlimited": validation rejects it.
	MaxMessageBytes int64 `toml:"max_message_bytes"`
	MaxRecipients   int   `toml:"max_recipients"`
	MaxLineLength   int   `toml:"max_line_length"`
	MaxHeaderBytes  int   `toml:"max_header_bytes"`
	MaxConnections  int   `toml:"max_connections"`
	// CommandTimeout bounds the wait for each command; DataTimeout each read
	// during DATA (RFC 5321 §4.5.3.2 suggests 3 minutes per block);
	// WriteTimeout each reply.
	CommandTimeout Duration `toml:"command_timeout"`
	DataTimeout    Duration `toml:"data_timeout"`
	WriteTimeout   Duration `toml:"write_timeout"`

	// TLSCert and TLSKey (PEM files, both or neither) enable STARTTLS on Listen.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`

	// UpstreamTLS is "none", "opportunistic" (STARTTLS when offered) or
	// "required". UpstreamTLSServerName overrides the name verified in the
	// upstream certificate; UpstreamTLSCA (a PEM file) replaces the system
	// roots for that check.
	UpstreamTLS           string   `toml:"upstream_tls"`
	UpstreamTLSServerName string   `toml:"upstream_tls_server_name"`
	UpstreamTLSCA         string   `toml:"upstream_tls_ca"`
	UpstreamTimeout       Duration `toml:"upstream_timeout"`

	// SpoolMemoryBytes is how much of a message is held in memory before the
	// (encrypted) spool moves it to a file.
	SpoolMemoryBytes int64 `toml:"spool_memory_bytes"`

	// Networks is AllowedNetworks parsed; filled by Default, Parse and Validate.
	Networks []netip.Prefix `toml:"-"`
}

// HTTP configures the directory's HTTP listener.
type HTTP struct {
	Listen string `toml:"listen"` // host:port for WKD, VKS, HKP, admin API and metrics
	// TLSCert and TLSKey (PEM files, both or neither) serve HTTPS on Listen.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
}

// Directory configures the key directory.
type Directory struct {
	// Domains whose keys this directory publishes over WKD. Validation
	// normalises each to lower-case ASCII (the IDNA A-label, "xn--…").
	Domains []string `toml:"domains"`
}

// SMIME configures S/MIME.
type SMIME struct {
	// TrustRoots are PEM files of CAs trusted for recipient certificates;
	// empty means the system roots.
	TrustRoots []string `toml:"trust_roots"`
	// Revocation is how certificate revocation is checked (CRL and OCSP):
	// "hard-fail" (the default: a certificate whose status cannot be
	// established is not used), "soft-fail" (used unless known revoked) or
	// "off".
	Revocation string `toml:"revocation"`
	// MaxMessageBytes caps the messages encrypted with S/MIME: the CMS
	// library works on whole messages in memory.
	MaxMessageBytes int64 `toml:"max_message_bytes"`
}

// Revocation modes.
const (
	RevocationHardFail = "hard-fail"
	RevocationSoftFail = "soft-fail"
	RevocationOff      = "off"
)

// PGP configures OpenPGP output.
type PGP struct {
	// ProtectHeaders moves Subject and other non-routing headers into the
	// encrypted part (RFC 9788). nil means true; use Config.ProtectHeaders.
	ProtectHeaders *bool `toml:"protect_headers"`
}

// Log configures logging.
type Log struct {
	Level  string `toml:"level"`  // "debug", "info", "warn" or "error"
	Format string `toml:"format"` // "text" or "json"
}

// PolicyRule is one [[policy]] table; the first rule that matches a
// recipient decides. Recipients no rule matches are opportunistic.
type PolicyRule struct {
	// Match is "*", "example.org", "*.example.org" (subdomains) or
	// "local@example.org". Validation lower-cases the domain and converts it
	// to ASCII (IDNA A-label); the local part is kept as written.
	Match   string `toml:"match"`
	Encrypt string `toml:"encrypt"` // "required", "opportunistic" or "never"
	Format  string `toml:"format"`  // "auto" (the default), "pgp" or "smime"
	// Prefer picks the format when format is "auto" and the recipient has
	// both an OpenPGP key and an S/MIME certificate: "pgp" (the default) or
	// "smime".
	Prefer string `toml:"prefer"`
}

// Policy rule values.
const (
	EncryptRequired      = "required"
	EncryptOpportunistic = "opportunistic"
	EncryptNever         = "never"

	FormatAuto  = "auto"
	FormatPGP   = "pgp"
	FormatSMIME = "smime"
)

// Upstream TLS modes.
const (
	UpstreamTLSNone          = "none"
	UpstreamTLSOpportunistic = "opportunistic"
	UpstreamTLSRequired      = "required"
)

// Duration is a time.Duration written as a Go duration string ("90s", "5m").
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string. Zero and negative values parse;
// validation rejects them so the message can name the key.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf(`invalid duration %q: write a number and a unit, like "90s", "5m" or "1h30m"`, text)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// Default returns the built-in configuration, already validated (Networks is
// filled). Its listeners are on loopback only.
func Default() *Config {
	hostname, err := os.Hostname()
	if err != nil || hostname == "" {
		hostname = "localhost"
	}
	protect := true
	c := &Config{
		DataDir:  "sealgate-data",
		Database: "",
		SMTP: SMTP{
			Listen:           "127.0.0.1:10025",
			Upstream:         "127.0.0.1:10026",
			AllowedNetworks:  []string{"127.0.0.0/8", "::1/128"},
			Hostname:         hostname,
			MaxMessageBytes:  50 << 20,
			MaxRecipients:    100, // RFC 5321 §4.5.3.1.8: the minimum a server must accept
			MaxLineLength:    8192,
			MaxHeaderBytes:   1 << 20,
			MaxConnections:   200,
			CommandTimeout:   Duration{5 * time.Minute}, // RFC 5321 §4.5.3.2.7
			DataTimeout:      Duration{3 * time.Minute}, // RFC 5321 §4.5.3.2.5, per read
			WriteTimeout:     Duration{5 * time.Minute},
			UpstreamTLS:      UpstreamTLSOpportunistic,
			UpstreamTimeout:  Duration{2 * time.Minute},
			SpoolMemoryBytes: 1 << 20,
		},
		HTTP:      HTTP{Listen: "127.0.0.1:8080"},
		Directory: Directory{Domains: []string{}},
		SMIME:     SMIME{TrustRoots: []string{}, Revocation: RevocationHardFail, MaxMessageBytes: 25 << 20},
		PGP:       PGP{ProtectHeaders: &protect},
		Log:       Log{Level: "info", Format: "text"},
		Policy:    []PolicyRule{},
	}
	c.SMTP.Networks, _ = parseNetworks(c.SMTP.AllowedNetworks)
	return c
}

// Load reads, decodes strictly and validates the file at path. A file that
// cannot be read gives a plain error; everything wrong inside it is reported
// at once as *Errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes data over Default(), rejects unknown keys and validates the
// result. name labels the problems (usually the file name). On any problem
// it returns a *Errors listing all of them, and no Config.
func Parse(data []byte, name string) (*Config, error) {
	cfg := Default()
	d := decodeInto(cfg, data)
	problems := d.problems
	if d.parsed { // a syntax error leaves nothing to validate
		for _, p := range cfg.check() {
			if d.hasFailed(p.Key) {
				continue // already reported as undecodable
			}
			pos := d.located(p.Key)
			p.Line, p.Column = pos.Line, pos.Col
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		for i := range problems {
			problems[i].File = name
		}
		sortProblems(problems)
		return nil, &Errors{Problems: problems}
	}
	return cfg, nil
}

// Validate checks a configuration built in code, normalising it in place the
// way Parse does (Networks filled, domains lower-cased, policy format
// defaulted). It returns nil or a *Errors listing every problem.
func (c *Config) Validate() error {
	if problems := c.check(); len(problems) > 0 {
		return &Errors{Problems: problems}
	}
	return nil
}

// ProtectHeaders reports whether header protection (RFC 9788) is on; it is
// unless the configuration turns it off.
func (c *Config) ProtectHeaders() bool {
	if c == nil || c.PGP.ProtectHeaders == nil {
		return true
	}
	return *c.PGP.ProtectHeaders
}
