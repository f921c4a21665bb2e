package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/sealgate/sealgate/keydir/wkd"
	"github.com/sealgate/sealgate/pgp"
)

// WKD client limits, as GnuPG's (key-directories.md §2.1).
const (
	maxWKDBytes     = 256 << 10 // MAX_WKD_RESULT_LENGTH, g10/call-dirmngr.c
	maxWKDRedirects = 2         // dirmngr ks-engine-http.c
	maxWKDKeys      = 5         // g10/import.c imports at most five keys
)

// testResolveEnv names the variable that replaces DNS for tests:
// "host=127.0.0.1:port,..." resolves only the listed hosts and dials the
// given address for them; every other host does not exist; "host=servfail"
// makes the lookup of host fail. TLS still checks the host name.
const testResolveEnv = "SEALMAIL_TEST_RESOLVE"

func cmdLookup(args []string, e *env) error {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	caFile := fs.String("ca-file", "", "")
	output := fs.String("output", "", "")
	timeout := fs.Duration("timeout", 15*time.Second, "")
	pos, err := parseArgs(fs, args)
	if err != nil || len(pos) != 1 {
		return usageError(err)
	}
	address := pos[0]
	urls, err := wkd.ForAddress(address)
	if err != nil {
		return err
	}
	res, err := newResolver(e.getenv(testResolveEnv))
	if err != nil {
		return err
	}
	tlsConf, err := tlsConfig(*caFile)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	target, err := wkdURL(ctx, res, address, urls)
	if err != nil {
		return err
	}
	client := &http.Client{
		Transport: &http.Transport{DialContext: res.dial, TLSClientConfig: tlsConf},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxWKDRedirects {
				return fmt.Errorf("more than %d redirects", maxWKDRedirects)
			}
			if req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to %s: WKD is HTTPS only", req.URL.Scheme)
			}
			return nil
		},
	}
	data, err := fetchWKD(ctx, client, target)
	if err != nil {
		return fmt.Errorf("lookup %s: %w", address, err)
	}
	certs, err := keysFor(address, data)
	if err != nil {
		return fmt.Errorf("lookup %s: %w", address, err)
	}
	printCerts(e, certs, e.now())
	if *output != "" {
		return writeCerts(*output, certs)
	}
	return nil
}

// wkdURL picks the method as GnuPG's dirmngr does (key-directories.md
// §1.3, §2.1): the advanced URL when openpgpkey.DOMAIN resolves, the
// direct URL only when that host does not exist. A DNS failure is an
// error, not a reason to fall back.
func wkdURL(ctx context.Context, res *resolver, address string, urls wkd.URLs) (string, error) {
	domain := strings.ToLower(address[strings.LastIndexByte(address, '@')+1:])
	host := "openpgpkey." + domain
	exists, err := res.exists(ctx, host)
	if err != nil {
		return "", fmt.Errorf("lookup %s: resolve %s: %w", address, host, err)
	}
	if exists {
		return urls.Advanced, nil
	}
	return urls.Direct, nil
}

// fetchWKD GETs url and returns the body of a 200 answer.
func fetchWKD(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	if !strings.HasPrefix(url, "https://") {
		return nil, errors.New("WKD is HTTPS only")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// Only 200 counts (a 401 challenge is never answered); anything else
	// means no key, as for GnuPG.
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("no key: %s answered %s", resp.Request.URL.Host, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxWKDBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if len(data) > maxWKDBytes {
		return nil, fmt.Errorf("answer larger than %d bytes", maxWKDBytes)
	}
	return data, nil
}

// keysFor parses the served keys (binary, or armored: GnuPG relaxes the
// draft there too) and keeps, per key, only the user IDs for address, as
// the draft's security considerations require; keys without one are
// dropped, and at most maxWKDKeys are kept. Secret keys are refused.
func keysFor(address string, data []byte) ([]*pgp.Cert, error) {
	certs, err := pgp.ReadCerts(bytes.NewReader(data), maxWKDBytes)
	if err != nil {
		return nil, err
	}
	want := asciiLower(address)
	var kept []*pgp.Cert
	for _, c := range certs {
		for name, id := range c.Entity.Identities {
			if id.UserId == nil || asciiLower(id.UserId.Email) != want {
				delete(c.Entity.Identities, name)
			}
		}
		if len(c.Entity.Identities) > 0 && len(kept) < maxWKDKeys {
			kept = append(kept, c)
		}
	}
	if len(kept) == 0 {
		return nil, fmt.Errorf("the served key has no user ID for %s", address)
	}
	return kept, nil
}

// asciiLower maps A–Z only, as GnuPG's mailbox comparison does.
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

func printCerts(e *env, certs []*pgp.Cert, now time.Time) {
	for _, c := range certs {
		fmt.Fprintln(e.stdout, c.Fingerprint())
		for _, name := range slices.Sorted(maps.Keys(c.Entity.Identities)) {
			fmt.Fprintf(e.stdout, "  uid  %s\n", name)
		}
		if err := c.CheckEncryption(now); err != nil {
			fmt.Fprintf(e.stdout, "  not usable for encryption: %v\n", err)
		}
	}
}

// writeCerts writes the filtered keys, armored.
func writeCerts(path string, certs []*pgp.Cert) error {
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, "PGP PUBLIC KEY BLOCK", nil)
	if err != nil {
		return err
	}
	for _, c := range certs {
		if _, err := w.Write(c.Bytes()); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	buf.WriteByte('\n')
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// resolver is the system DNS, or the test table of testResolveEnv.
type resolver struct {
	table map[string]string // nil: system DNS
}

func newResolver(spec string) (*resolver, error) {
	if spec == "" {
		return &resolver{}, nil
	}
	r := &resolver{table: map[string]string{}}
	for _, item := range strings.Split(spec, ",") {
		host, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || host == "" || addr == "" {
			return nil, fmt.Errorf("%s: %q is not host=address", testResolveEnv, item)
		}
		r.table[strings.ToLower(host)] = addr
	}
	return r, nil
}

// exists reports whether host has an address; false only when DNS says
// it does not (NXDOMAIN or no address records).
func (r *resolver) exists(ctx context.Context, host string) (bool, error) {
	if r.table != nil {
		switch addr, ok := r.table[host]; {
		case !ok:
			return false, nil
		case addr == "servfail":
			return false, &net.DNSError{Err: "server misbehaving", Name: host, IsTemporary: true}
		}
		return true, nil
	}
	_, err := net.DefaultResolver.LookupHost(ctx, host)
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return false, nil
	}
	return false, err
}

func (r *resolver) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if r.table != nil {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		target, ok := r.table[strings.ToLower(host)]
		if !ok || target == "servfail" {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		addr = target
	}
	d := &net.Dialer{Timeout: 15 * time.Second}
	return d.DialContext(ctx, network, addr)
}
