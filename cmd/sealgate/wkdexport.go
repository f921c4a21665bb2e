package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/keydir/httpd"
	"github.com/sealgate/sealgate/keydir/wkd"
)

// The static WKD tree "sealgate wkd export DIR" writes, for every domain
// D in [directory] domains (draft-koch-openpgp-webkey-service §3.1):
//
//	DIR/D/.well-known/openpgpkey/hu/HASH                       direct method, document root of https://D/
//	DIR/D/.well-known/openpgpkey/policy
//	DIR/openpgpkey.D/.well-known/openpgpkey/D/hu/HASH          advanced method, root of https://openpgpkey.D/
//	DIR/openpgpkey.D/.well-known/openpgpkey/D/policy
//
// Each HASH file is exactly what the server answers (httpd.WKDAnswer):
// binary keys with only the user ID of that address. Files are replaced
// atomically, and files in the hu directories that no longer match a
// published address are removed, so a removed key stops being served.

// exportStats counts what an export wrote.
type exportStats struct {
	domains, addresses, failed int
}

func cmdWKDExport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wkd export", flag.ContinueOnError)
	file := fs.String("config", "", "config file (default: built-in defaults)")
	pos, err := parseArgs(fs, args)
	if err != nil || len(pos) != 1 {
		return errUsage
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		return err
	}
	if len(cfg.Directory.Domains) == 0 {
		return errors.New("wkd export: [directory] domains is empty: no domain to export")
	}
	ctx := context.Background()
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	st, err := exportWKD(ctx, store, cfg.Directory.Domains, pos[0], time.Now(), stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "exported %d addresses in %d domains to %s (both methods)\n", st.addresses, st.domains, pos[0])
	if st.failed > 0 {
		fmt.Fprintf(stderr, "%d addresses were not exported\n", st.failed)
		return exitError(1)
	}
	return nil
}

// exportWKD writes the tree under dir. An address whose keys cannot be
// read is reported on warn and left out; a file system or store error
// stops the export.
func exportWKD(ctx context.Context, store keydir.Store, domains []string, dir string, now time.Time, warn io.Writer) (exportStats, error) {
	keys, err := store.List(ctx)
	if err != nil {
		return exportStats{}, err
	}
	byHash := groupByWKDHash(keys, domains)
	st := exportStats{domains: len(domains)}
	for _, d := range domains {
		n, failed, err := exportDomain(dir, d, byHash[d], now, warn)
		if err != nil {
			return st, fmt.Errorf("wkd export %s: %w", d, err)
		}
		st.addresses += n
		st.failed += failed
	}
	return st, nil
}

// groupByWKDHash maps domain → WKD hash → the keys with an address there,
// for the given domains only.
func groupByWKDHash(keys []keydir.Key, domains []string) map[string]map[string][]keydir.Key {
	out := map[string]map[string][]keydir.Key{}
	for _, d := range domains {
		out[d] = map[string][]keydir.Key{}
	}
	for _, k := range keys {
		for _, a := range k.Addresses {
			at := strings.LastIndexByte(a, '@')
			hashes, ok := out[a[at+1:]]
			if at <= 0 || !ok {
				continue
			}
			h := wkd.Hash(a[:at])
			hashes[h] = append(hashes[h], k)
		}
	}
	return out
}

// exportDomain writes both trees of domain and returns how many addresses
// it wrote and how many failed.
func exportDomain(dir, domain string, byHash map[string][]keydir.Key, now time.Time, warn io.Writer) (int, int, error) {
	wellKnown := []string{
		filepath.Join(dir, domain, ".well-known", "openpgpkey"),
		filepath.Join(dir, "openpgpkey."+domain, ".well-known", "openpgpkey", domain),
	}
	for _, wk := range wellKnown {
		if err := os.MkdirAll(filepath.Join(wk, "hu"), 0o755); err != nil {
			return 0, 0, err
		}
		if err := writeAtomic(filepath.Join(wk, "policy"), []byte(httpd.PolicyFile)); err != nil {
			return 0, 0, err
		}
	}
	written := map[string]bool{}
	failed := 0
	for _, h := range slices.Sorted(maps.Keys(byHash)) {
		body, err := httpd.WKDAnswer(byHash[h], domain, h, now)
		if errors.Is(err, httpd.ErrNoWKDKey) {
			continue
		}
		if err != nil {
			fmt.Fprintf(warn, "wkd export: %s hash %s: %v\n", domain, h, err)
			failed++
			continue
		}
		for _, wk := range wellKnown {
			if err := writeAtomic(filepath.Join(wk, "hu", h), body); err != nil {
				return 0, 0, err
			}
		}
		written[h] = true
	}
	for _, wk := range wellKnown {
		if err := pruneDir(filepath.Join(wk, "hu"), written); err != nil {
			return 0, 0, err
		}
	}
	return len(written), failed, nil
}

// writeAtomic replaces path with data (mode 0644: the tree is public), so
// that a web server never serves a half-written file.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	err = errors.Join(err, f.Chmod(0o644), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}

// pruneDir removes the files in dir whose names are not in keep: keys
// removed from the directory, and temporary files of an interrupted run.
func pruneDir(dir string, keep map[string]bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() || keep[e.Name()] {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
