package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/sealgate/sealgate/keydir/httpd"
	"github.com/sealgate/sealgate/keydir/wkd"
)

func writeConfigWithDomains(t *testing.T, domains string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "sealgate.toml")
	cfg := "data_dir = \"" + filepath.Join(dir, "data") + "\"\n[directory]\ndomains = " + domains + "\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// exportedUserIDs reads the User ID packets of an exported WKD file.
func exportedUserIDs(t *testing.T, b []byte) []string {
	t.Helper()
	var ids []string
	r := packet.NewReader(bytes.NewReader(b))
	for {
		p, err := r.Next()
		if err == io.EOF {
			return ids
		}
		if err != nil {
			t.Fatalf("exported file: %v", err)
		}
		if u, ok := p.(*packet.UserId); ok {
			ids = append(ids, u.Id)
		}
	}
}

func TestWKDExport(t *testing.T) {
	cfg := writeConfigWithDomains(t, `["example.org"]`)
	alice, _ := writeKey(t, "Alice@Example.ORG", "alice@other.example")
	bob, _ := writeKey(t, "bob@other.example")
	if out, stderr, err := cli(t, "keys", "import", "--config", cfg, alice, bob); err != nil {
		t.Fatalf("import: %v\n%s%s", err, out, stderr)
	}
	out := t.TempDir()
	direct := filepath.Join(out, "example.org", ".well-known", "openpgpkey")
	advanced := filepath.Join(out, "openpgpkey.example.org", ".well-known", "openpgpkey", "example.org")
	stale := filepath.Join(direct, "hu", wkd.Hash("gone"))
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("old key"), 0o644); err != nil {
		t.Fatal(err)
	}

	stdout, stderr, err := cli(t, "wkd", "export", out, "--config", cfg)
	if err != nil || !strings.Contains(stdout, "exported 1 addresses in 1 domains") {
		t.Fatalf("export: %v\n%s%s", err, stdout, stderr)
	}
	h := wkd.Hash("alice")
	var files [][]byte
	for _, wk := range []string{direct, advanced} {
		b, err := os.ReadFile(filepath.Join(wk, "hu", h))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, b)
		if ids := exportedUserIDs(t, b); !slices.Equal(ids, []string{"Test <Alice@Example.ORG>"}) {
			t.Errorf("%s: user IDs %q, want only the example.org one", wk, ids)
		}
		policy, err := os.ReadFile(filepath.Join(wk, "policy"))
		if err != nil || string(policy) != httpd.PolicyFile || !strings.HasSuffix(string(policy), "\n") {
			t.Errorf("%s: policy %q (%v)", wk, policy, err)
		}
		entries, err := os.ReadDir(filepath.Join(wk, "hu"))
		if err != nil || len(entries) != 1 {
			t.Errorf("%s/hu holds %d files, want only alice's (stale, temporary and bob's files must not be there)", wk, len(entries))
		}
	}
	if !bytes.Equal(files[0], files[1]) {
		t.Error("the direct and advanced files differ")
	}
	if _, err := os.Stat(filepath.Join(out, "other.example")); err == nil {
		t.Error("a tree was written for a domain not in [directory] domains")
	}

	// A removed key disappears from the tree on the next export.
	if _, _, err := cli(t, "keys", "remove", "--config", cfg, "alice@example.org"); err != nil {
		t.Fatal(err)
	}
	if stdout, _, err := cli(t, "wkd", "export", "--config", cfg, out); err != nil || !strings.Contains(stdout, "exported 0 addresses") {
		t.Fatalf("second export: %v %s", err, stdout)
	}
	for _, wk := range []string{direct, advanced} {
		if _, err := os.Stat(filepath.Join(wk, "hu", h)); !os.IsNotExist(err) {
			t.Errorf("%s: the removed key is still exported (%v)", wk, err)
		}
	}
}

func TestWKDExportNeedsDomains(t *testing.T) {
	cfg := writeConfigWithDomains(t, `[]`)
	if _, _, err := cli(t, "wkd", "export", t.TempDir(), "--config", cfg); err == nil || !strings.Contains(err.Error(), "domains is empty") {
		t.Errorf("export without domains: %v", err)
	}
	if _, _, err := cli(t, "wkd", "export", "--config", cfg); err != errUsage {
		t.Errorf("export without DIR: %v, want usage", err)
	}
}
