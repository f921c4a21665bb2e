package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sealgate/sealgate/keydir"
)

// cmdKeysHistory prints the recorded changes for an address, oldest first.
func cmdKeysHistory(args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("keys history", flag.ContinueOnError)
	file := fs.String("config", "", "config file (default: built-in defaults)")
	pos, err := parseArgs(fs, args)
	if err != nil || len(pos) != 1 {
		return errUsage
	}
	norm, err := keydir.NormalizeAddress(pos[0])
	if err != nil {
		return err
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
	events, err := store.History(ctx, norm)
	if err != nil {
		return err
	}
	if len(events) == 0 {
		fmt.Fprintf(stdout, "no recorded changes for %s\n", norm)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tFINGERPRINT\tADDRESSES")
	for _, e := range events {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Actor, e.Action,
			e.Fingerprint, strings.Join(e.Addresses, ", "))
	}
	return tw.Flush()
}

// cliActor names the operator for the history: "cli:" and the login name,
// or "cli" when the user cannot be determined.
func cliActor() string {
	u, err := user.Current()
	if err != nil || u.Username == "" {
		return "cli"
	}
	return "cli:" + u.Username
}
