package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/pgp"
	"github.com/sealgate/sealgate/smime"
)

func cmdKeys(sub string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	file := fs.String("config", "", "config file (default: built-in defaults)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return errUsage
	}
	want := map[string]int{"import": -1, "list": 0, "show": 1, "remove": 1}
	n, ok := want[sub]
	if !ok || (n >= 0 && len(pos) != n) || (n < 0 && len(pos) == 0) {
		return errUsage
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		return err
	}
	// The store records every change with this actor (keys history).
	ctx := keydir.WithActor(context.Background(), cliActor())
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	switch sub {
	case "import":
		v, err := newSMIMEValidator(cfg.SMIME, slog.New(slog.NewTextHandler(stderr, nil)))
		if err != nil {
			return err
		}
		return keysImport(ctx, store, pos, keydir.ImportOptions{X509: v}, stdout, stderr)
	case "list":
		return keysList(ctx, store, stdout)
	case "show":
		return keysShow(ctx, store, pos[0], stdout)
	default:
		return keysRemove(ctx, store, pos[0], stdout)
	}
}

// keysImport imports every file; it reports each key and exits 1 when any
// file or key was refused (the others are still stored).
func keysImport(ctx context.Context, store keydir.Store, files []string, opts keydir.ImportOptions, stdout, stderr io.Writer) error {
	imported, refused := 0, 0
	for _, f := range files {
		results, err := keydir.ImportFileWith(ctx, store, f, time.Now(), opts)
		if err != nil {
			fmt.Fprintf(stderr, "%s: refused: %v (nothing from this file was stored)\n", f, err)
			refused++
			continue
		}
		for _, r := range results {
			if r.Err != nil {
				fmt.Fprintf(stderr, "%s: refused %s: %v\n", f, r.Fingerprint, r.Err)
				refused++
				continue
			}
			fmt.Fprintf(stdout, "imported %s %s\n", r.Fingerprint, strings.Join(r.Addresses, ", "))
			imported++
		}
	}
	fmt.Fprintf(stdout, "%d imported, %d refused\n", imported, refused)
	if refused > 0 {
		return exitError(1)
	}
	return nil
}

func keysList(ctx context.Context, store keydir.Store, stdout io.Writer) error {
	keys, err := store.List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FINGERPRINT\tKIND\tUPDATED\tADDRESSES")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Fingerprint, k.Kind, k.Updated.UTC().Format(time.RFC3339), strings.Join(k.Addresses, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d keys\n", len(keys))
	return nil
}

func keysShow(ctx context.Context, store keydir.Store, address string, stdout io.Writer) error {
	norm, err := keydir.NormalizeAddress(address)
	if err != nil {
		return err
	}
	keys, err := store.Lookup(ctx, norm)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return fmt.Errorf("no key published for %s", norm)
	}
	for i, k := range keys {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		fmt.Fprintf(stdout, "fingerprint: %s\nkind:        %s\naddresses:   %s\nimported:    %s\nupdated:     %s\nstatus:      %s\n",
			k.Fingerprint, k.Kind, strings.Join(k.Addresses, ", "),
			k.Created.UTC().Format(time.RFC3339), k.Updated.UTC().Format(time.RFC3339), keyStatus(k))
	}
	return nil
}

// keyStatus says whether the gateway would encrypt to the key right now.
func keyStatus(k keydir.Key) string {
	if k.Kind == keydir.KindX509 {
		certs, err := x509.ParseCertificates(k.Data) // the leaf, then its CA certificates
		if err != nil || len(certs) == 0 {
			return fmt.Sprintf("unreadable: %v", err)
		}
		if err := smime.CheckUsable(certs[0], time.Now()); err != nil {
			return "not usable: " + err.Error()
		}
		return "usable for encryption (chain and revocation are checked at each use)"
	}
	if k.Kind != keydir.KindPGP {
		return "unknown kind"
	}
	certs, err := pgp.ReadCerts(bytes.NewReader(k.Data), int64(len(k.Data))+1)
	if err != nil || len(certs) != 1 {
		return fmt.Sprintf("unreadable: %v", err)
	}
	if err := certs[0].CheckEncryption(time.Now()); err != nil {
		return "not usable: " + err.Error()
	}
	return "usable for encryption"
}

func keysRemove(ctx context.Context, store keydir.Store, target string, stdout io.Writer) error {
	if strings.Contains(target, "@") {
		norm, err := keydir.NormalizeAddress(target)
		if err != nil {
			return err
		}
		fprs, err := store.RemoveAddress(ctx, norm)
		if errors.Is(err, keydir.ErrNotFound) {
			return fmt.Errorf("no key published for %s", norm)
		}
		if err != nil {
			return err
		}
		for _, f := range fprs {
			fmt.Fprintf(stdout, "removed %s\n", f)
		}
		return nil
	}
	fpr := strings.ToUpper(strings.ReplaceAll(target, " ", ""))
	if err := store.Remove(ctx, fpr); errors.Is(err, keydir.ErrNotFound) {
		return fmt.Errorf("no key with fingerprint %s", fpr)
	} else if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "removed %s\n", fpr)
	return nil
}
