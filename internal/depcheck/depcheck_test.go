package depcheck

import (
	"bufio"
	"bytes"
	"context"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// banned is the import path prefix nothing may use: x/crypto/openpgp is
// frozen, accepts unauthenticated (no-MDC) data and knows no RFC 9580.
const banned = "golang.org/x/crypto/openpgp"

func isBanned(path string) bool { return path == banned || strings.HasPrefix(path, banned+"/") }

// moduleRoot returns the directory of sealgate's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("not inside a module")
	}
	return filepath.Dir(gomod)
}

func TestIsBanned(t *testing.T) {
	for path, want := range map[string]bool{
		"golang.org/x/crypto/openpgp":                true,
		"golang.org/x/crypto/openpgp/armor":          true,
		"golang.org/x/crypto/openpgpx":               false,
		"github.com/ProtonMail/go-crypto/openpgp":    false,
		"golang.org/x/crypto/ocsp":                   false,
		"github.com/ProtonMail/go-crypto/openpgp/v2": false,
	} {
		if isBanned(path) != want {
			t.Errorf("isBanned(%q) = %v", path, !want)
		}
	}
}

// TestNoXCryptoOpenPGPDependency: no package sealgate builds or tests,
// ours or a dependency's, imports x/crypto/openpgp.
func TestNoXCryptoOpenPGPDependency(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-e", "-deps", "-test", "./...")
	cmd.Dir = moduleRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -e -deps -test ./...: %v\n%s", err, stderr.Bytes())
	}
	n := 0
	for sc := bufio.NewScanner(bytes.NewReader(out)); sc.Scan(); n++ {
		// Test variants print as "path [pkg.test]".
		if path, _, _ := strings.Cut(sc.Text(), " "); isBanned(path) {
			t.Errorf("%s is in the build graph; use github.com/ProtonMail/go-crypto/openpgp", path)
		}
	}
	if n < 50 {
		t.Fatalf("go list printed only %d packages: the check is not looking", n)
	}
}

// TestNoXCryptoOpenPGPImport reads the imports of every Go file in the
// module, whatever its build tags (go list sees only the default ones).
func TestNoXCryptoOpenPGPImport(t *testing.T) {
	root := moduleRoot(t)
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		files++
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); isBanned(p) {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("%s imports %s", rel, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 20 {
		t.Fatalf("read only %d Go files: the check is not looking", files)
	}
}

// minimums are the oldest releases that carry the fixes SECURITY.md lists.
var minimums = map[string]string{
	"github.com/ProtonMail/go-crypto": "v1.5.2",  // #313, #319, #320, #322, #325
	"go.mozilla.org/pkcs7":            "v0.10.0", // ber2der panics (mozilla #67, PR #94)
	"github.com/emersion/go-smtp":     "v0.25.1", // PR #246: only CRLF.CRLF ends DATA
}

// TestDependencyMinimums reads go.mod: each module above is required at
// its minimum or later, and none is replaced.
func TestDependencyMinimums(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(moduleRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	inRequire := false
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(strings.Split(line, "//")[0])
		f := strings.Fields(line)
		switch {
		case line == "require (":
			inRequire = true
		case line == ")":
			inRequire = false
		case len(f) >= 3 && f[0] == "require":
			got[f[1]] = f[2]
		case inRequire && len(f) == 2:
			got[f[0]] = f[1]
		case len(f) > 0 && f[0] == "replace":
			for m := range minimums {
				if strings.Contains(line, m) {
					t.Errorf("go.mod replaces %s: %s", m, line)
				}
			}
		}
	}
	for m, want := range minimums {
		v, ok := got[m]
		if !ok {
			t.Errorf("go.mod does not require %s", m)
			continue
		}
		if semverLess(v, want) {
			t.Errorf("%s %s is older than %s, the first release with the fixes in SECURITY.md", m, v, want)
		}
	}
}

// semverLess compares vMAJOR.MINOR.PATCH[-pre]; a pre-release or pseudo-
// version of a release sorts before it.
func semverLess(a, b string) bool {
	pa, pb := semverParts(a), semverParts(b)
	for i := range pa {
		if pa[i] != pb[i] {
			return pa[i] < pb[i]
		}
	}
	return strings.Contains(a, "-") && !strings.Contains(b, "-")
}

func semverParts(v string) [3]int {
	var p [3]int
	core, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), "-")
	for i, s := range strings.SplitN(core, ".", 3) {
		p[i], _ = strconv.Atoi(s)
	}
	return p
}

func TestSemverLess(t *testing.T) {
	for _, c := range []struct {
		a, b string
		less bool
	}{
		{"v1.4.1", "v1.5.2", true}, {"v1.5.2", "v1.5.2", false}, {"v1.10.0", "v1.5.2", false},
		{"v0.9.0", "v0.10.0", true}, {"v1.5.2-0.20260101000000-abcdef123456", "v1.5.2", true},
		{"v2.0.0", "v1.9.9", false},
	} {
		if semverLess(c.a, c.b) != c.less {
			t.Errorf("semverLess(%s, %s) = %v", c.a, c.b, !c.less)
		}
	}
}
