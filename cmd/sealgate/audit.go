package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/sealgate/sealgate/keydir"
)

// cmdAudit prints the audit trail, or verifies its hash chain.
func cmdAudit(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "verify" {
		return cmdAuditVerify(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	file := fs.String("config", "", "config file (default: built-in defaults)")
	since := fs.String("since", "", "only records at or after this time (RFC 3339, or a duration such as 24h)")
	rcpt := fs.String("recipient", "", "only records for this recipient address")
	asJSON := fs.Bool("json", false, "print JSON lines")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		return errUsage
	}
	filter := keydir.AuditFilter{}
	if *since != "" {
		t, err := parseSince(*since, time.Now())
		if err != nil {
			return err
		}
		filter.Since = t
	}
	if *rcpt != "" {
		a, err := keydir.NormalizeAddress(*rcpt)
		if err != nil {
			return err
		}
		filter.Recipient = a
	}
	store, err := openConfiguredStore(*file)
	if err != nil {
		return err
	}
	defer store.Close()
	recs, err := store.Audit(context.Background(), filter)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, r := range recs {
			if err := enc.Encode(auditJSON(r)); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tTX\tSENDER\tRECIPIENT\tDECISION\tFORMAT\tKEY\tRULE\tOUTCOME")
	for _, r := range recs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.Format(time.RFC3339), r.TxID, r.Sender,
			r.Recipient, r.Decision, dash(r.Format), dash(r.Fingerprint), r.Rule, r.Outcome)
	}
	return tw.Flush()
}

func cmdAuditVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	file := fs.String("config", "", "config file (default: built-in defaults)")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		return errUsage
	}
	store, err := openConfiguredStore(*file)
	if err != nil {
		return err
	}
	defer store.Close()
	n, head, err := store.VerifyAudit(context.Background())
	if errors.Is(err, keydir.ErrAuditBroken) {
		fmt.Fprintln(stderr, err)
		return exitError(1)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "audit trail OK: %d records, head %s\n", n, dash(head))
	return nil
}

func openConfiguredStore(file string) (keydir.Store, error) {
	cfg, err := loadConfig(file)
	if err != nil {
		return nil, err
	}
	return openStore(context.Background(), cfg)
}

// parseSince accepts an RFC 3339 time, a date, or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339, time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time, a date (2006-01-02) or a duration (24h)", s)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type auditLine struct {
	Seq         int64     `json:"seq"`
	Time        time.Time `json:"time"`
	TxID        string    `json:"tx"`
	MessageID   string    `json:"message_id,omitempty"`
	Sender      string    `json:"sender"`
	Recipient   string    `json:"recipient"`
	Decision    string    `json:"decision"`
	Format      string    `json:"format,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	KeySource   string    `json:"key_source,omitempty"`
	Rule        string    `json:"rule"`
	Outcome     string    `json:"outcome"`
	Hash        string    `json:"hash"`
}

func auditJSON(r keydir.AuditRecord) auditLine {
	return auditLine{r.Seq, r.Time, r.TxID, r.MessageID, r.Sender, r.Recipient, r.Decision, r.Format,
		r.Fingerprint, r.KeySource, r.Rule, r.Outcome, r.Hash}
}
