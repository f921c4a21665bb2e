package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/sealgate/sealgate/keydir"
)

// cmdTokens manages the admin API's bearer tokens: create, list, revoke.
func cmdTokens(sub string, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("tokens "+sub, flag.ContinueOnError)
	file := fs.String("config", "", "config file (default: built-in defaults)")
	name := fs.String("name", "", "what the token is for (tokens create)")
	scope := fs.String("scope", string(keydir.ScopeRead), "read or write (tokens create)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return errUsage
	}
	want := map[string]int{"create": 0, "list": 0, "revoke": 1}
	n, ok := want[sub]
	if !ok || len(pos) != n || (sub == "create" && *name == "") {
		return errUsage
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		return err
	}
	ctx := context.Background()
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	switch sub {
	case "create":
		return tokensCreate(ctx, store, *name, keydir.Scope(*scope), stdout, stderr)
	case "list":
		return tokensList(ctx, store, stdout)
	default:
		return tokensRevoke(ctx, store, pos[0], stdout)
	}
}

// tokensCreate prints the secret alone on stdout, so that
// "sealgate tokens create --name x > token-file" makes a token file, and
// the rest on stderr.
func tokensCreate(ctx context.Context, store keydir.Store, name string, scope keydir.Scope, stdout, stderr io.Writer) error {
	secret, tok, err := store.CreateToken(ctx, name, scope)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, secret)
	fmt.Fprintf(stderr, "created token %s %q with %s scope.\n"+
		"The secret above is shown this once: only its hash is stored, so it cannot be shown again.\n"+
		"Revoke the token with: sealgate tokens revoke %s\n", tok.ID, tok.Name, tok.Scope, tok.ID)
	return nil
}

func tokensList(ctx context.Context, store keydir.Store, stdout io.Writer) error {
	toks, err := store.ListTokens(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tCREATED\tREVOKED")
	for _, t := range toks {
		revoked := "-"
		if !t.Revoked.IsZero() {
			revoked = t.Revoked.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Scope, t.Created.UTC().Format(time.RFC3339), revoked)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d tokens\n", len(toks))
	return nil
}

func tokensRevoke(ctx context.Context, store keydir.Store, id string, stdout io.Writer) error {
	if err := store.RevokeToken(ctx, id); errors.Is(err, keydir.ErrNotFound) {
		return fmt.Errorf("no token with ID %q", id)
	} else if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoked %s\n", id)
	return nil
}
