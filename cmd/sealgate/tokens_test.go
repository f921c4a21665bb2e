package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sealgate/sealgate/keydir"
)

// testConfig writes a config whose SQLite database lives in a fresh directory.
func testConfig(t *testing.T) (file, dataDir string) {
	t.Helper()
	dir := t.TempDir()
	dataDir = filepath.Join(dir, "data")
	file = filepath.Join(dir, "sealgate.toml")
	if err := os.WriteFile(file, []byte("data_dir = "+strconv.Quote(dataDir)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return file, dataDir
}

func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestTokensCLI(t *testing.T) {
	cfg, dataDir := testConfig(t)
	out, errOut, err := runCLI(t, "tokens", "create", "--name", "ci deploy", "--scope", "write", "--config", cfg)
	if err != nil {
		t.Fatalf("tokens create: %v", err)
	}
	secret := strings.TrimSpace(out)
	if !regexp.MustCompile(`^sgt_[a-z2-7]{52}$`).MatchString(secret) {
		t.Errorf("tokens create stdout = %q; want the secret alone", out)
	}
	id := regexp.MustCompile(`created token ([0-9a-f]{8})`).FindStringSubmatch(errOut)
	if id == nil || !strings.Contains(errOut, "cannot be shown again") {
		t.Fatalf("tokens create stderr = %q; want the ID and the shown-once warning", errOut)
	}

	out, _, err = runCLI(t, "tokens", "list", "--config", cfg)
	if err != nil || !regexp.MustCompile(id[1]+` +ci deploy +write +\S+ +-\n`).MatchString(out) {
		t.Errorf("tokens list = %q, %v; want the active token", out, err)
	}
	if out, _, err := runCLI(t, "tokens", "revoke", id[1], "--config", cfg); err != nil || out != "revoked "+id[1]+"\n" {
		t.Errorf("tokens revoke = %q, %v", out, err)
	}
	if _, _, err := runCLI(t, "tokens", "revoke", "ffffffff", "--config", cfg); err == nil {
		t.Error("tokens revoke of an unknown ID: want an error")
	}
	for _, bad := range [][]string{{"tokens", "create"}, {"tokens", "list", "x"}, {"tokens", "revoke"}, {"tokens", "nope"}} {
		if _, _, err := runCLI(t, append(bad, "--config", cfg)...); !errors.Is(err, errUsage) {
			t.Errorf("%q: err = %v; want the usage", bad, err)
		}
	}

	s, err := keydir.Open(t.Context(), "", dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AuthenticateToken(t.Context(), secret); !errors.Is(err, keydir.ErrUnauthorized) {
		t.Errorf("AuthenticateToken after tokens revoke: err = %v; want ErrUnauthorized", err)
	}
}

func TestKeysHistoryCLI(t *testing.T) {
	cfg, dataDir := testConfig(t)
	s, err := keydir.Open(t.Context(), "", dataDir)
	if err != nil {
		t.Fatal(err)
	}
	const fpr = "00000000000000000000000000000000000ABCDE"
	key := keydir.Key{Fingerprint: fpr, Kind: keydir.KindPGP, Data: []byte("x"), Addresses: []string{"alice@example.org"}}
	if err := s.Put(keydir.WithActor(context.Background(), "token:0badf00d"), key); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "keys", "remove", fpr, "--config", cfg); err != nil {
		t.Fatalf("keys remove: %v", err)
	}

	out, _, err := runCLI(t, "keys", "history", "<Alice@Example.ORG>", "--config", cfg)
	if err != nil {
		t.Fatalf("keys history: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIME") ||
		!regexp.MustCompile(`token:0badf00d +import +`+fpr+` +alice@example.org$`).MatchString(lines[1]) ||
		!regexp.MustCompile(`cli(:\S+)? +remove +`+fpr).MatchString(lines[2]) {
		t.Errorf("keys history =\n%s\nwant a header, the import by the token and the removal by the CLI user", out)
	}
	if out, _, err := runCLI(t, "keys", "history", "bob@example.org", "--config", cfg); err != nil || !strings.Contains(out, "no recorded changes") {
		t.Errorf("keys history of an unknown address = %q, %v", out, err)
	}
	if _, _, err := runCLI(t, "keys", "history", "--config", cfg); !errors.Is(err, errUsage) {
		t.Errorf("keys history without an address: err = %v; want the usage", err)
	}
}
