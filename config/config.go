// Package config is sealgate's configuration: the TOML schema, built-in
// defaults, strict loading and validation that reports every error at once.
package config

import (
	"errors"
	"net/netip"
	"time"
)

// Config is the whole configuration file.
type Config struct {
	DataDir   string       `toml:"data_dir"`
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
	Listen          string   `toml:"listen"`
	Upstream        string   `toml:"upstream"`
	AllowedNetworks []string `toml:"allowed_networks"`
	Hostname        string   `toml:"hostname"`

	MaxMessageBytes int64    `toml:"max_message_bytes"`
	MaxRecipients   int      `toml:"max_recipients"`
	MaxLineLength   int      `toml:"max_line_length"`
	MaxHeaderBytes  int      `toml:"max_header_bytes"`
	MaxConnections  int      `toml:"max_connections"`
	CommandTimeout  Duration `toml:"command_timeout"`
	DataTimeout     Duration `toml:"data_timeout"`
	WriteTimeout    Duration `toml:"write_timeout"`

	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`

	UpstreamTLS           string   `toml:"upstream_tls"`
	UpstreamTLSServerName string   `toml:"upstream_tls_server_name"`
	UpstreamTLSCA         string   `toml:"upstream_tls_ca"`
	UpstreamTimeout       Duration `toml:"upstream_timeout"`

	SpoolMemoryBytes int64 `toml:"spool_memory_bytes"`

	Networks []netip.Prefix `toml:"-"`
}

// HTTP configures the directory's HTTP listener.
type HTTP struct {
	Listen string `toml:"listen"`
}

// Directory configures the key directory.
type Directory struct {
	Domains []string `toml:"domains"`
}

// SMIME configures S/MIME.
type SMIME struct {
	TrustRoots []string `toml:"trust_roots"`
}

// PGP configures OpenPGP output.
type PGP struct {
	ProtectHeaders *bool `toml:"protect_headers"`
}

// Log configures logging.
type Log struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// PolicyRule is one [[policy]] table; the first rule that matches a
// recipient decides.
type PolicyRule struct {
	Match   string `toml:"match"`
	Encrypt string `toml:"encrypt"`
	Format  string `toml:"format"`
}

// Duration is a time.Duration written as a Go duration string ("90s", "5m").
type Duration struct{ time.Duration }

// Default returns the built-in configuration.
func Default() *Config { return nil }

// Load reads, decodes strictly and validates the file at path.
func Load(path string) (*Config, error) { return nil, errors.New("not implemented") }
