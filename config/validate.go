package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
)

// checker collects validation problems; each names its key.
type checker struct{ problems []Problem }

func (v *checker) add(key, format string, args ...any) {
	v.problems = append(v.problems, Problem{Key: key, Message: fmt.Sprintf(format, args...)})
}

// check validates c, normalising it in place, and returns every problem.
func (c *Config) check() []Problem {
	var v checker
	if c.DataDir == "" {
		v.add("data_dir", "must not be empty")
	}
	v.database("database", c.Database)
	c.SMTP.check(&v)
	v.address("http.listen", c.HTTP.Listen, false)
	checkTLSPair(&v, "http", c.HTTP.TLSCert, c.HTTP.TLSKey, "HTTPS")
	c.Directory.check(&v)
	for i, path := range c.SMIME.TrustRoots {
		v.certificates(fmt.Sprintf("smime.trust_roots[%d]", i), path)
	}
	v.oneOf("smime.revocation", c.SMIME.Revocation, RevocationHardFail, RevocationSoftFail, RevocationOff)
	positive(&v, "smime.max_message_bytes", c.SMIME.MaxMessageBytes)
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
	checkPolicy(&v, c.Policy)
	return v.problems
}

func (s *SMTP) check(v *checker) {
	v.address("smtp.listen", s.Listen, false)
	v.address("smtp.upstream", s.Upstream, true)
	s.checkNetworks(v)
	if s.Hostname == "" || strings.ContainsFunc(s.Hostname, isSpaceOrControl) {
		v.add("smtp.hostname", "must be the gateway's host name, without spaces (got %q)", s.Hostname)
	}

	positive(v, "smtp.max_message_bytes", s.MaxMessageBytes)
	positive(v, "smtp.max_recipients", s.MaxRecipients)
	positive(v, "smtp.max_line_length", s.MaxLineLength)
	positive(v, "smtp.max_header_bytes", s.MaxHeaderBytes)
	positive(v, "smtp.max_connections", s.MaxConnections)
	positive(v, "smtp.spool_memory_bytes", s.SpoolMemoryBytes)
	v.duration("smtp.command_timeout", s.CommandTimeout)
	v.duration("smtp.data_timeout", s.DataTimeout)
	v.duration("smtp.write_timeout", s.WriteTimeout)
	v.duration("smtp.upstream_timeout", s.UpstreamTimeout)

	s.checkTLS(v)
	v.oneOf("smtp.upstream_tls", s.UpstreamTLS, UpstreamTLSNone, UpstreamTLSOpportunistic, UpstreamTLSRequired)
	if name := s.UpstreamTLSServerName; name != "" {
		if _, err := netip.ParseAddr(name); err != nil {
			if _, err := normalizeDomain(name); err != nil {
				v.add("smtp.upstream_tls_server_name", "must be a host name or IP address: %v", err)
			}
		}
	}
	if s.UpstreamTLSCA != "" {
		v.certificates("smtp.upstream_tls_ca", s.UpstreamTLSCA)
	}
}

// checkNetworks fills Networks from AllowedNetworks.
func (s *SMTP) checkNetworks(v *checker) {
	s.Networks = nil
	if len(s.AllowedNetworks) == 0 {
		v.add("smtp.allowed_networks", `must list at least one network, like "127.0.0.0/8" (an empty list would refuse every client)`)
		return
	}
	for i, text := range s.AllowedNetworks {
		p, err := parseNetwork(text)
		if err != nil {
			v.add(fmt.Sprintf("smtp.allowed_networks[%d]", i), "%v", err)
			continue
		}
		s.Networks = append(s.Networks, p)
	}
}

// checkTLS checks the STARTTLS certificate and key.
func (s *SMTP) checkTLS(v *checker) {
	checkTLSPair(v, "smtp", s.TLSCert, s.TLSKey, "STARTTLS")
}

// checkTLSPair checks a section's tls_cert and tls_key: both or neither,
// both readable, and a matching pair.
func checkTLSPair(v *checker, section, cert, key, what string) {
	certOK := cert != "" && v.readable(section+".tls_cert", cert) != nil
	keyOK := key != "" && v.readable(section+".tls_key", key) != nil
	switch {
	case cert == "" && key != "":
		v.add(section+".tls_cert", "must be set when %s.tls_key is set (%s needs both)", section, what)
	case cert != "" && key == "":
		v.add(section+".tls_key", "must be set when %s.tls_cert is set (%s needs both)", section, what)
	case certOK && keyOK:
		if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
			v.add(section+".tls_cert", "cannot be used with %s.tls_key: %v", section, err)
		}
	}
}

func (d *Directory) check(v *checker) {
	seen := map[string]int{}
	for i, domain := range d.Domains {
		key := fmt.Sprintf("directory.domains[%d]", i)
		norm, err := normalizeDomain(domain)
		if err != nil {
			v.add(key, "%v", err)
			continue
		}
		if j, dup := seen[norm]; dup {
			v.add(key, "%q is listed twice (also directory.domains[%d])", norm, j)
			continue
		}
		seen[norm] = i
		d.Domains[i] = norm
	}
}

// checkPolicy validates and normalises the rules. A rule that an earlier rule
// completely shadows is an error, not a warning: a "required" rule below a
// "*" opportunistic rule would silently never apply, and mail that policy
// meant to encrypt would go out in plaintext.
func checkPolicy(v *checker, rules []PolicyRule) {
	valid := map[int]bool{}
	for i := range rules {
		r := &rules[i]
		key := fmt.Sprintf("policy[%d]", i)
		if m, err := normalizeMatch(r.Match); err != nil {
			v.add(key+".match", "%v", err)
		} else {
			r.Match = m
			valid[i] = true
			for j := range i {
				if valid[j] && covers(rules[j].Match, m) {
					v.add(key+".match", "this rule never applies: policy[%d] (match = %q) comes first and matches every recipient it matches", j, rules[j].Match)
					break
				}
			}
		}
		if r.Encrypt == "" {
			v.add(key+".encrypt", "missing; must be one of required, opportunistic, never")
		} else {
			v.oneOf(key+".encrypt", r.Encrypt, EncryptRequired, EncryptOpportunistic, EncryptNever)
		}
		if r.Format == "" {
			r.Format = FormatAuto
		}
		v.oneOf(key+".format", r.Format, FormatAuto, FormatPGP, FormatSMIME)
		if r.Prefer != "" { // empty: pgp
			v.oneOf(key+".prefer", r.Prefer, FormatPGP, FormatSMIME)
		}
	}
}

func positive[T int | int64](v *checker, key string, n T) {
	switch {
	case n == 0:
		v.add(key, "must be greater than 0 (0 does not mean unlimited)")
	case n < 0:
		v.add(key, "must be greater than 0 (got %d)", n)
	}
}

func (v *checker) duration(key string, d Duration) {
	if d.Duration <= 0 {
		v.add(key, "must be greater than 0 (got %s)", d.Duration)
	}
}

func (v *checker) oneOf(key, got string, allowed ...string) {
	if !slices.Contains(allowed, got) {
		v.add(key, "must be one of %s (got %q)", strings.Join(allowed, ", "), got)
	}
}

// address checks host:port with a numeric port from 1 to 65535. A listener
// may leave the host empty (":10025", every interface); an upstream may not.
func (v *checker) address(key, addr string, needHost bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(key, `must be host:port, like "127.0.0.1:10025" or "[::1]:10025" (got %q)`, addr)
		return
	}
	if needHost && host == "" {
		v.add(key, "needs a host before the port (got %q)", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		v.add(key, "port must be a number from 1 to 65535 (got %q)", port)
	}
}

// database accepts "" (SQLite) or a PostgreSQL URL. The value is never
// repeated in the message: it may hold a password.
func (v *checker) database(key, dsn string) {
	if dsn == "" {
		return
	}
	lower := strings.ToLower(dsn)
	if !strings.HasPrefix(lower, "postgres://") && !strings.HasPrefix(lower, "postgresql://") {
		v.add(key, `must be "" (SQLite in data_dir) or a URL starting postgres:// or postgresql://`)
		return
	}
	if _, err := url.Parse(dsn); err != nil {
		v.add(key, "is not a valid URL")
	}
}

// maxReferencedFile bounds the PEM files the configuration names; a CA
// bundle is a few hundred kilobytes.
const maxReferencedFile = 16 << 20

// readable reads a regular file named by key, or reports why it cannot and
// returns nil. Special files are refused so that "config check" cannot hang
// on a FIFO or read /dev/zero forever.
func (v *checker) readable(key, path string) []byte {
	st, err := os.Stat(path)
	if err != nil {
		v.add(key, "cannot read file: %v", err)
		return nil
	}
	if !st.Mode().IsRegular() {
		v.add(key, "%s is not a regular file", path)
		return nil
	}
	if st.Size() > maxReferencedFile {
		v.add(key, "%s is larger than %d bytes", path, maxReferencedFile)
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		v.add(key, "cannot read file: %v", err)
		return nil
	}
	if data == nil {
		data = []byte{}
	}
	return data
}

// certificates checks that path is a readable file with PEM certificates.
func (v *checker) certificates(key, path string) {
	if path == "" {
		v.add(key, "must be the path of a PEM file")
		return
	}
	data := v.readable(key, path)
	if data != nil && !x509.NewCertPool().AppendCertsFromPEM(data) {
		v.add(key, "%s contains no PEM certificate", path)
	}
}

// parseNetwork accepts a CIDR network or a single address (a /32 or /128).
// Host bits after the prefix length are cleared: "10.1.2.3/8" is 10.0.0.0/8.
func parseNetwork(text string) (netip.Prefix, error) {
	if strings.Contains(text, "/") {
		p, err := netip.ParsePrefix(text)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf(`not a CIDR network like "192.0.2.0/24" or "2001:db8::/32" (got %q)`, text)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(text)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf(`not an IP address or CIDR network like "192.0.2.0/24" (got %q)`, text)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("an address with a zone cannot be used (got %q)", text)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parseNetworks parses a list known to be valid (the defaults).
func parseNetworks(list []string) ([]netip.Prefix, error) {
	var (
		out  []netip.Prefix
		errs []error
	)
	for _, text := range list {
		p, err := parseNetwork(text)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

func isSpaceOrControl(r rune) bool {
	return r <= ' ' || r == 0x7f
}
