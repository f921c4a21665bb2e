// Command sealmail is sealgate's endpoint client, the half that holds
// private keys: it generates an OpenPGP key, publishes the public key to
// the organisation's directory, decrypts PGP/MIME, inline PGP and S/MIME
// mail without ever releasing unverified plaintext, and looks keys up in
// Web Key Directories as mail clients do. See DESIGN.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sealgate/sealgate/internal/cmdline"
)

const usage = `sealmail — the endpoint client of sealgate

Usage:
  sealmail keygen --email ADDRESS [--name NAME] [--home DIR]
                  [--profile default|rfc9580|pq] [--passphrase-file FILE]
        create an OpenPGP key; print its fingerprint and the public key's path.
        default: v4 Ed25519 + Curve25519 (GnuPG, Thunderbird, Sequoia read it);
        rfc9580: v6 Ed25519 + X25519; pq: v6 ML-DSA-65+Ed25519 + ML-KEM-768+X25519.
  sealmail export [--home DIR] [--secret]
        print the armored public key (--secret: the secret key, still
        protected by its passphrase, for importing into another client)
  sealmail publish --directory URL [--token-file FILE] [--home DIR] [--ca-file FILE]
        upload the public key to the directory's admin API (POST URL/api/v1/keys)
  sealmail decrypt [--home DIR] [--key FILE]... [--trust FILE]... [--passphrase-file FILE]
                   [--debug] < message.eml > plain.eml
        decrypt PGP/MIME, inline PGP or S/MIME; verify the signatures inside
        (OpenPGP combined, PGP/MIME multipart/signed, S/MIME signed-data
        opaque or detached) or around the encryption, and report them as
        X-Sealmail-Signature: good|mismatch|unknown-key|bad|none
  sealmail lookup ADDRESS [--ca-file FILE] [--output FILE]
        Web Key Directory lookup as GnuPG does it; print fingerprints and user IDs

--home defaults to sealmail under the user configuration directory
(~/.config/sealmail). --key takes OpenPGP keys (secret ones decrypt, public
ones verify signatures) or S/MIME identities (PEM key and certificate, or
PKCS#12). A passphrase is read from --passphrase-file (its first line) or
asked for on the terminal.

Signature verdicts: good — valid, by a key we have (OpenPGP: --key files and
the home key) or a certificate that chains to a trust anchor now with
emailProtection (S/MIME: the system roots plus every --trust FILE of CA
certificates), and the signer's user ID or certificate address is the From
address; mismatch — valid, but signed by someone else than From; unknown-key —
no key for the signer, or an untrusted S/MIME certificate; bad — the check
failed or the signature is malformed; none — unsigned. With several
signatures the worst counts. A signed part becomes the message body (the
multipart/signed wrapper is removed, the verdict headers say what it was);
stderr says why a signature is not good. X-Sealmail-Signer is the OpenPGP
fingerprint or the certificate's SHA-256 fingerprint. A bad signature does
not stop the output.

decrypt writes nothing unless the whole message decrypted and its integrity
was verified. Every refusal prints the same line, "sealmail: message cannot
be decrypted", so that no failure can be told from another. --debug adds
the reason for local troubleshooting; it is an oracle, so never use it in
automated pipelines or where a sender can see the output.

--ca-file replaces the system CA pool with the certificates in FILE (for
private CAs and tests). SEALMAIL_TEST_RESOLVE=host=ip:port,... makes lookup
resolve only the listed hosts (every other host does not exist); for tests.

Exit status: 0 success; 1 error (usage, keys, files, network, the server
refused); 2 the message cannot be decrypted.
`

// errUsage asks main to print the usage; it exits 1, since 2 means
// "cannot be decrypted".
var errUsage = errors.New("usage")

func usageError(err error) error {
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return errUsage
}

func main() {
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, now: time.Now}
	os.Exit(exitCode(run(os.Args[1:], e), e.stderr))
}

// exitCode reports err on stderr and returns the exit status.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errRefused):
		fmt.Fprintln(stderr, "sealmail:", errRefused)
		return 2
	case errors.Is(err, errUsage):
		if err != errUsage {
			fmt.Fprintln(stderr, "sealmail:", err)
		}
		fmt.Fprint(stderr, usage)
		return 1
	default:
		fmt.Fprintln(stderr, "sealmail:", err)
		return 1
	}
}

func run(args []string, e *env) error {
	if len(args) == 0 {
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "keygen":
		return cmdKeygen(rest, e)
	case "export":
		return cmdExport(rest, e)
	case "publish":
		return cmdPublish(rest, e)
	case "decrypt":
		return cmdDecrypt(rest, e)
	case "lookup":
		return cmdLookup(rest, e)
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, usage)
		return nil
	}
	return errUsage
}

// parseArgs parses flags that may stand anywhere among the positional
// arguments ("lookup alice@example.org --ca-file ca.pem").
var parseArgs = cmdline.ParseArgs
