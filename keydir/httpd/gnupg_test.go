package httpd

// Tests with the real GnuPG client (gpg 2.2 and its dirmngr): a WKD
// lookup over HTTPS on port 443, an HKP fetch, and a revocation made by
// gpg --gen-revoke. DESIGN.md lists GnuPG as required; a missing tool
// fails the test.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// wkdTestDomain resolves to 127.0.0.1 (with openpgpkey.) only while the
// WKD test runs; .example is reserved (RFC 2606), so no real host is hidden.
const wkdTestDomain = "sealgate-wkd-test.example"

const toolTimeout = 90 * time.Second

// wksClient is where Debian installs gpg-wks-client (package gpg-wks-client).
const wksClient = "/usr/lib/gnupg/gpg-wks-client"

// gpgHome is a throw-away GNUPGHOME whose daemons are killed at cleanup.
type gpgHome struct {
	t   *testing.T
	dir string
}

func newGPGHome(t *testing.T) *gpgHome {
	t.Helper()
	// A short path: the agent's and dirmngr's sockets live in it (108-byte limit).
	dir, err := os.MkdirTemp("", "sg-wkd")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	g := &gpgHome{t: t, dir: dir}
	t.Cleanup(func() {
		g.runErr(nil, "gpgconf", "--homedir", dir, "--kill", "all")
		os.RemoveAll(dir)
	})
	return g
}

// runErr runs a GnuPG tool in this home and returns stdout, stderr and
// the error.
func (g *gpgHome) runErr(stdin []byte, name string, args ...string) (string, string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", "", errors.New(name + " is not installed (Debian package gnupg)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+g.dir)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		err = errors.New("timed out")
	}
	return out.String(), errb.String(), err
}

// gpg runs gpg non-interactively (empty passphrase) and fails the test on
// an error.
func (g *gpgHome) gpg(stdin []byte, args ...string) string {
	g.t.Helper()
	base := []string{"--homedir", g.dir, "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""}
	out, errOut, err := g.runErr(stdin, "gpg", append(base, args...)...)
	if err != nil {
		g.t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// userIDs lists the user IDs gpg holds for fpr.
func (g *gpgHome) userIDs(fpr string) []string {
	g.t.Helper()
	var uids []string
	for line := range strings.SplitSeq(g.gpg(nil, "--with-colons", "--list-keys", fpr), "\n") {
		if f := strings.Split(line, ":"); f[0] == "uid" && len(f) > 9 {
			uids = append(uids, f[9])
		}
	}
	return uids
}

var keyCreated = regexp.MustCompile(`KEY_CREATED [BP] ([0-9A-F]{40})`)

// genKey makes an Ed25519/Cv25519 key in gpg and returns its fingerprint.
func (g *gpgHome) genKey(uid string) string {
	g.t.Helper()
	out := g.gpg(nil, "--batch", "--status-fd", "1", "--quick-gen-key", uid, "future-default", "default", "1y")
	m := keyCreated.FindStringSubmatch(out)
	if m == nil {
		g.t.Fatalf("no KEY_CREATED in %q", out)
	}
	return m[1]
}

// TestGnuPGLocateKeysOverWKD: gpg --locate-keys with only the WKD method
// fetches a published key from the running server over HTTPS, by the
// advanced method when openpgpkey.DOMAIN resolves and by the direct one
// when it does not, and keeps the one user ID of the address. Needs root:
// it binds 127.0.0.1:443, adds a CA to the system trust store and names
// to /etc/hosts (all removed at cleanup).
func TestGnuPGLocateKeysOverWKD(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: it listens on 127.0.0.1:443, edits /etc/hosts and the system CAs (CI runs as root)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:443")
	if err != nil {
		t.Fatalf("127.0.0.1:443 must be free for the WKD test: %v", err)
	}
	d := newTestDir(t, Options{}, wkdTestDomain)
	e := entity(t, "Joe.Doe@"+wkdTestDomain, "joe@elsewhere.example")
	other := entity(t, "jane@"+wkdTestDomain)
	d.publish(e)
	d.publish(other)
	caPEM, tlsCfg := testPKI(t, wkdTestDomain, "openpgpkey."+wkdTestDomain)
	paths := make(chan string, 100)
	record := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths <- r.URL.Path
		d.srv.Config.Handler.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: record, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	trustSystemCA(t, caPEM)

	for _, tc := range []struct{ method, hosts, path string }{
		{"advanced", wkdTestDomain + " openpgpkey." + wkdTestDomain, "/.well-known/openpgpkey/" + wkdTestDomain + "/hu/" + vectorHash},
		{"direct", wkdTestDomain, "/.well-known/openpgpkey/hu/" + vectorHash},
	} {
		t.Run(tc.method, func(t *testing.T) {
			addHosts(t, "127.0.0.1 "+tc.hosts)
			g := newGPGHome(t)
			// standard-resolver: use the system resolver, hence /etc/hosts.
			// dirmngr checks WKD servers against the system CAs only (its
			// hkp-cacert option applies to hkps:// keyservers, not to WKD).
			logFile := filepath.Join(g.dir, "dirmngr.log")
			conf := "standard-resolver\nverbose\nlog-file " + logFile + "\n"
			if err := os.WriteFile(filepath.Join(g.dir, "dirmngr.conf"), []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			g.gpg(nil, "--batch", "--auto-key-locate", "clear,wkd,nodefault", "--locate-keys", "joe.doe@"+wkdTestDomain)
			if got := drain(paths); !slices.Contains(got, tc.path) {
				t.Fatalf("the server saw %q, want %s; dirmngr log:\n%s", got, tc.path, readFile(t, logFile))
			}
			if uids := g.userIDs(fingerprint(e)); len(uids) != 1 || uids[0] != "Test User <Joe.Doe@"+wkdTestDomain+">" {
				t.Errorf("gpg holds user IDs %q, want only the WKD address's", uids)
			}
			// GnuPG's policy parser reads our policy file without error:
			// domain:WKD:WKS:error-code:protocol-version:auth-submit:mailbox-only.
			out, errOut, err := g.runErr(nil, wksClient, "--supported", "--with-colons", "joe.doe@"+wkdTestDomain)
			if f := strings.Split(strings.TrimSpace(out), ":"); err != nil || len(f) < 4 || f[1] != "1" || f[3] != "" {
				t.Errorf("gpg-wks-client --supported: %q %v\n%s", out, err, errOut)
			}
			if out, _, err := g.runErr(nil, "gpg", "--homedir", g.dir, "--with-colons", "--list-keys", fingerprint(other)); err == nil {
				t.Errorf("gpg also holds the other key: %s", out)
			}
		})
	}
}

// drain returns what is waiting in c.
func drain(c chan string) []string {
	var out []string
	for {
		select {
		case s := <-c:
			out = append(out, s)
		default:
			return out
		}
	}
}

// Debian's update-ca-certificates takes local CAs from
// /usr/local/share/ca-certificates and links them into /etc/ssl/certs.
const (
	systemCAName   = "sealgate-wkd-test"
	systemCAFile   = "/usr/local/share/ca-certificates/" + systemCAName + ".crt"
	systemCertsDir = "/etc/ssl/certs"
)

// removeLinksTo removes the symbolic links in dir that point to one of
// targets.
func removeLinksTo(t *testing.T, dir string, targets ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Errorf("clean %s: %v", dir, err)
		return
	}
	for _, e := range entries {
		if e.Type()&os.ModeSymlink == 0 {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if dest, err := os.Readlink(p); err == nil && slices.Contains(targets, dest) {
			if err := os.Remove(p); err != nil {
				t.Errorf("clean %s: %v", dir, err)
			}
		}
	}
}

// trustSystemCA adds the test CA to the system trust store, and removes
// it at cleanup. The CA is name-constrained to the test domain, valid
// for a day, and its key exists only in this process.
func trustSystemCA(t *testing.T, caPEM []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(systemCAFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(systemCAFile, caPEM, 0o644); err != nil {
		t.Fatalf("cannot add the test CA: %v", err)
	}
	update := func() error {
		out, err := exec.Command("update-ca-certificates").CombinedOutput()
		if err != nil {
			return fmt.Errorf("update-ca-certificates: %v\n%s", err, out)
		}
		return nil
	}
	t.Cleanup(func() {
		if err := os.Remove(systemCAFile); err != nil {
			t.Errorf("remove the test CA: %v", err)
		}
		// update-ca-certificates rebuilds the bundle without the CA but
		// leaves its symlinks behind when nothing else changed.
		removeLinksTo(t, systemCertsDir, systemCAFile, systemCAName+".pem")
		if err := update(); err != nil {
			t.Error(err)
		}
	})
	if err := update(); err != nil {
		t.Fatal(err)
	}
}

// testPKI makes a CA and a server certificate for names, and returns the
// CA certificate (PEM) and a TLS config with the server certificate.
func testPKI(t *testing.T, names ...string) ([]byte, *tls.Config) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sealgate WKD test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		// It may only vouch for the test names (RFC 5280 §4.2.1.10).
		PermittedDNSDomainsCritical: true, PermittedDNSDomains: names,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return caPEM, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

const hostsFile = "/etc/hosts"

// addHosts appends line to /etc/hosts, marked, and removes exactly that
// line at cleanup. The file is rewritten in place: in containers it is
// often a bind mount, which rename cannot replace.
func addHosts(t *testing.T, line string) {
	t.Helper()
	marked := line + " # sealgate httpd test " + t.Name()
	orig, err := os.ReadFile(hostsFile)
	if err != nil {
		t.Fatal(err)
	}
	add := string(orig)
	if add != "" && !strings.HasSuffix(add, "\n") {
		add += "\n"
	}
	if err := os.WriteFile(hostsFile, []byte(add+marked+"\n"), 0o644); err != nil {
		t.Fatalf("cannot add test names to %s: %v", hostsFile, err)
	}
	t.Cleanup(func() {
		cur, err := os.ReadFile(hostsFile)
		if err != nil {
			t.Errorf("restore %s: %v", hostsFile, err)
			return
		}
		var keep []string
		for l := range strings.SplitSeq(strings.TrimSuffix(string(cur), "\n"), "\n") {
			if l != marked {
				keep = append(keep, l)
			}
		}
		if err := os.WriteFile(hostsFile, []byte(strings.Join(keep, "\n")+"\n"), 0o644); err != nil {
			t.Errorf("restore %s: %v", hostsFile, err)
		}
	})
}

// TestGnuPGReceiveOverHKP: gpg --recv-keys from the directory as an HKP
// keyserver gets the key with only the user IDs of served domains.
func TestGnuPGReceiveOverHKP(t *testing.T) {
	d, alice, _ := keyserverDir(t)
	g := newGPGHome(t)
	keyserver := "hkp://" + d.srv.Listener.Addr().String()
	g.gpg(nil, "--batch", "--keyserver", keyserver, "--recv-keys", fingerprint(alice))
	if uids := g.userIDs(fingerprint(alice)); len(uids) != 1 || uids[0] != "Test User <alice@example.org>" {
		t.Errorf("gpg holds user IDs %q", uids)
	}
}

// TestGnuPGRevocation: a revocation certificate from gpg --gen-revoke,
// sent to the admin API, revokes the published key; so does the
// colon-protected one gpg writes to openpgp-revocs.d at key creation.
func TestGnuPGRevocation(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	tk := d.tokens()
	g := newGPGHome(t)
	for i, local := range []string{"rev", "auto"} {
		fpr := g.genKey("Rev Test <" + local + "@example.org>")
		pub := []byte(g.gpg(nil, "--armor", "--export", fpr))
		if resp, v := d.api("POST", "/api/v1/keys", tk.write, pub); resp.StatusCode != 201 {
			t.Fatalf("import gpg key: %d %v", resp.StatusCode, v)
		}
		var rev []byte
		if i == 0 {
			// Answers: revoke? y; reason 0 (none); empty description; okay? y.
			revFile := filepath.Join(g.dir, "rev.asc")
			g.gpg([]byte("y\n0\n\ny\n"), "--command-fd", "0", "--armor", "--output", revFile, "--gen-revoke", fpr)
			rev = readFile(t, revFile)
		} else {
			rev = readFile(t, filepath.Join(g.dir, "openpgp-revocs.d", fpr+".rev"))
		}
		resp, v := d.api("POST", "/api/v1/keys/"+fpr+"/revoke", tk.write, rev)
		if resp.StatusCode != 200 || v["usable"] != false {
			t.Fatalf("revoke with gpg's certificate (%s): %d %v", local, resp.StatusCode, v)
		}
		checkRevokedEverywhere(t, d, fpr, local)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
