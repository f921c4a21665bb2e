// Command sealgate is the OpenPGP and S/MIME encryption gateway: an SMTP
// proxy that encrypts outbound mail per recipient, and the key directory
// that serves the organisation's keys. See README.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sealgate/sealgate/internal/cmdline"
)

const usage = `sealgate — OpenPGP and S/MIME email encryption gateway

Usage:
  sealgate serve [--config FILE]                 run the SMTP proxy and directory HTTP
  sealgate config check --config FILE            print every config error; exit 1 on any
  sealgate keys import [--config FILE] FILE...   import OpenPGP keys and X.509 certificates (public only)
  sealgate keys list [--config FILE]             list the directory's keys
  sealgate keys show [--config FILE] ADDRESS     show the keys published for an address
  sealgate keys remove [--config FILE] ADDRESS|FINGERPRINT
  sealgate keys history [--config FILE] ADDRESS  print the recorded changes for an address
  sealgate tokens create --name NAME [--scope read|write] [--config FILE]
                                                 create an admin API token (default scope read);
                                                 prints its secret, once, on stdout
  sealgate tokens list [--config FILE]           list admin API tokens
  sealgate tokens revoke [--config FILE] ID      revoke an admin API token
  sealgate audit [--since T] [--recipient A] [--json] [--config FILE]
                                                 print the audit trail of recipient decisions
  sealgate audit verify [--config FILE]          check the audit trail's hash chain; exit 1 if broken
  sealgate wkd hash ADDRESS                      print the WKD hash and both URLs
  sealgate wkd export [--config FILE] DIR        write the static WKD tree (both methods,
                                                 policy files) of [directory] domains to DIR

Without --config, built-in defaults apply: SQLite under ./sealgate-data,
SMTP 127.0.0.1:10025 -> upstream 127.0.0.1:10026, HTTP 127.0.0.1:8080.
deploy/sealgate.example.toml documents every setting.
`

// errUsage asks main to print the usage and exit 2.
var errUsage = errors.New("usage")

// exitError carries an exit status without printing anything more.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	var code exitError
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	case errors.As(err, &code):
		os.Exit(int(code))
	default:
		fmt.Fprintln(os.Stderr, "sealgate:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	sub := ""
	if len(rest) > 0 {
		sub = rest[0]
	}
	switch {
	case cmd == "serve":
		return cmdServe(rest, stderr)
	case cmd == "config" && sub == "check":
		return cmdConfigCheck(rest[1:], stdout, stderr)
	case cmd == "keys" && sub == "history":
		return cmdKeysHistory(rest[1:], stdout)
	case cmd == "tokens" && sub != "":
		return cmdTokens(sub, rest[1:], stdout, stderr)
	case cmd == "keys" && sub != "":
		return cmdKeys(sub, rest[1:], stdout, stderr)
	case cmd == "audit":
		return cmdAudit(rest, stdout, stderr)
	case cmd == "wkd" && sub == "hash":
		return cmdWKDHash(rest[1:], stdout)
	case cmd == "wkd" && sub == "export":
		return cmdWKDExport(rest[1:], stdout, stderr)
	case cmd == "help" || cmd == "-h" || cmd == "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return errUsage
}

// parseArgs parses flags that may stand anywhere among the positional
// arguments ("keys import a.asc --config x.toml").
var parseArgs = cmdline.ParseArgs
