package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// cli runs the command in-process and returns stdout, stderr and the error.
func cli(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func writeConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "sealgate.toml")
	cfg := "data_dir = \"" + filepath.Join(dir, "data") + "\"\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeKey(t *testing.T, addrs ...string) (string, string) {
	t.Helper()
	e, err := openpgp.NewEntity("Test", "", addrs[0], &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs[1:] {
		if err := e.AddUserId("Test", "", a, nil); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	w, _ := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	path := filepath.Join(t.TempDir(), "key.asc")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, strings.ToUpper(e.PrimaryKey.KeyIdString())
}

func TestKeysLifecycle(t *testing.T) {
	cfg := writeConfig(t)
	key, keyID := writeKey(t, "Alice@Example.ORG", "alice@other.example")
	// --config after the file: flags may stand anywhere.
	out, stderr, err := cli(t, "keys", "import", key, "--config", cfg)
	if err != nil || !strings.Contains(out, "1 imported, 0 refused") {
		t.Fatalf("import: %v\n%s%s", err, out, stderr)
	}
	out, _, err = cli(t, "keys", "list", "--config", cfg)
	if err != nil || !strings.Contains(out, "alice@example.org, alice@other.example") || !strings.Contains(out, "1 keys") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, _, err = cli(t, "keys", "show", "--config", cfg, "ALICE@example.org")
	if err != nil || !strings.Contains(out, keyID) || !strings.Contains(out, "usable for encryption") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	// Removing by one address removes the whole key, with its other address.
	out, _, err = cli(t, "keys", "remove", "--config", cfg, "alice@example.org")
	if err != nil || !strings.Contains(out, keyID) {
		t.Fatalf("remove by address: %v\n%s", err, out)
	}
	if _, _, err := cli(t, "keys", "show", "--config", cfg, "alice@other.example"); err == nil || !strings.Contains(err.Error(), "no key published") {
		t.Fatalf("show after remove: %v", err)
	}
	// Remove by fingerprint, written with spaces and in lower case.
	if _, _, err := cli(t, "keys", "import", "--config", cfg, key); err != nil {
		t.Fatal(err)
	}
	out, _, _ = cli(t, "keys", "list", "--config", cfg)
	fpr := strings.Fields(strings.Split(out, "\n")[1])[0]
	spaced := strings.ToLower(fpr[:20] + " " + fpr[20:])
	if out, _, err := cli(t, "keys", "remove", "--config", cfg, spaced); err != nil || !strings.Contains(out, fpr) {
		t.Fatalf("remove by fingerprint: %v\n%s", err, out)
	}
	if _, _, err := cli(t, "keys", "remove", "--config", cfg, fpr); err == nil {
		t.Fatal("removing a missing key succeeded")
	}
	out, _, _ = cli(t, "keys", "list", "--config", cfg)
	if !strings.Contains(out, "0 keys") {
		t.Fatalf("list after removals:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"keys"}, {"keys", "frobnicate"}, {"keys", "show"}, {"keys", "import"}, {"wkd", "hash"}, {"config", "check"}, {"serve", "extra"}} {
		if _, _, err := cli(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: err = %v, want usage", args, err)
		}
	}
	out, _, err := cli(t, "help")
	if err != nil || !strings.Contains(out, "sealgate serve") {
		t.Fatalf("help: %v %q", err, out)
	}
}
