package main

import (
	"bytes"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/sealgate/sealgate/pgp/endpoint"
	"github.com/sealgate/sealgate/smime"
)

// errRefused is the one message every refusal to decrypt shows, on stderr
// and in automated pipelines alike (STYLE rule 5; reliability.md C3: a
// padding failure must look exactly like a key failure). main maps it to
// exit status 2.
var errRefused = errors.New("message cannot be decrypted")

// refusal carries the cause of a refusal for --debug only.
type refusal struct{ cause error }

func (r *refusal) Error() string { return errRefused.Error() }
func (r *refusal) Is(target error) bool {
	return target == errRefused
}

func refuse(cause error) error { return &refusal{cause: cause} }

// keyring is everything decrypt can use: OpenPGP secret keys (unlocked)
// and public keys for signatures, S/MIME key pairs, and the trust anchors
// for S/MIME signers (nil: the system roots).
type keyring struct {
	pgp   openpgp.EntityList
	smime []*smime.KeyPair
	roots *x509.CertPool
}

func (k *keyring) canDecrypt() bool {
	if len(k.smime) > 0 {
		return true
	}
	for _, e := range k.pgp {
		if endpoint.HasSecret(e) {
			return true
		}
	}
	return false
}

type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func cmdDecrypt(args []string, e *env) error {
	fs := flag.NewFlagSet("decrypt", flag.ContinueOnError)
	home := fs.String("home", "", "")
	var keyFiles stringList
	fs.Var(&keyFiles, "key", "")
	var trustFiles stringList
	fs.Var(&trustFiles, "trust", "")
	passFile := fs.String("passphrase-file", "", "")
	debug := fs.Bool("debug", false, "")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) != 0 {
		return usageError(err)
	}
	pass := &passphrase{file: *passFile, env: e}
	keys, err := loadKeyring(*home, keyFiles, pass)
	if err != nil {
		return err
	}
	if keys.roots, err = loadTrust(trustFiles); err != nil {
		return err
	}
	msg, err := readLimited(e.stdin, maxMessageBytes)
	if err != nil {
		return err
	}
	out, d, err := decryptMessage(msg, keys, e.now)
	if err != nil {
		var r *refusal
		if *debug && errors.As(err, &r) {
			// For local troubleshooting only: this detail is an oracle
			// and must never reach a sender or an automated pipeline.
			fmt.Fprintf(e.stderr, "sealmail: debug: %v\n", r.cause)
		}
		return err
	}
	// Only now, with the whole message decrypted and checked, does any
	// byte reach stdout.
	if _, err := e.stdout.Write(out); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	fmt.Fprintln(e.stderr, signatureLine(d))
	return nil
}

// readLimited reads the message; a larger one is refused like any other
// it cannot decrypt.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read message: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, refuse(fmt.Errorf("message larger than %d bytes", limit))
	}
	return b, nil
}

// decryptMessage is the whole front end: parse, decrypt, check, assemble.
// Every error it returns is a refusal.
func decryptMessage(msg []byte, keys *keyring, now nowFunc) (out []byte, d *decrypted, err error) {
	defer func() {
		if p := recover(); p != nil { // hostile input must not crash us
			out, d, err = nil, nil, refuse(fmt.Errorf("panic: %v", p))
		}
	}()
	env, err := parseEnvelope(msg)
	if err != nil {
		return nil, nil, refuse(err)
	}
	switch env.kind {
	case kindSMIME:
		d, err = decryptSMIME(env.payload, keys.smime)
	default:
		d, err = decryptPGP(env.payload, keys.pgp, now)
	}
	if err != nil {
		return nil, nil, refuse(err)
	}
	if env.kind != kindPGPInline {
		if err := checkEntity(d.plaintext); err != nil {
			return nil, nil, refuse(err)
		}
	}
	out, err = finish(env, d, keys, now)
	if err != nil {
		return nil, nil, refuse(err)
	}
	return out, d, nil
}

func decryptPGP(payload []byte, keys openpgp.EntityList, now nowFunc) (*decrypted, error) {
	res, err := endpoint.Decrypt(payload, keys, endpoint.DecryptOptions{MaxPlaintext: maxMessageBytes, Now: now})
	if err != nil {
		return nil, err
	}
	d := &decrypted{plaintext: res.Plaintext, signature: endpoint.SignatureNone}
	if res.Signature != endpoint.SignatureNone {
		d.checks = append(d.checks, combinedCheck(res, now))
	}
	return d, nil
}

// decryptSMIME tries each key pair. smime.Decrypt gives one error for
// every failure, so trying several keys reveals nothing more.
func decryptSMIME(der []byte, pairs []*smime.KeyPair) (*decrypted, error) {
	for _, kp := range pairs {
		plain, err := smime.Decrypt(der, kp.Cert, kp.Key)
		if err == nil {
			if len(plain) > maxMessageBytes {
				return nil, errors.New("plaintext too large")
			}
			// A signature inside is verified by finish.
			return &decrypted{plaintext: plain, signature: endpoint.SignatureNone}, nil
		}
	}
	return nil, errors.New("no S/MIME key decrypts the message")
}

// loadKeyring reads the key in home (when there is one) and every --key
// file: OpenPGP keys (secret ones are unlocked with the passphrase, public
// ones verify signatures), or S/MIME key pairs (PEM key and certificate,
// or PKCS#12).
func loadKeyring(homeFlag string, keyFiles []string, pass *passphrase) (*keyring, error) {
	home, err := homeDir(homeFlag)
	if err != nil {
		return nil, err
	}
	// Read every file before asking for a passphrase.
	files := map[string][]byte{}
	secretPath := filepath.Join(home, secretFile)
	switch data, err := os.ReadFile(secretPath); {
	case err == nil:
		files[secretPath] = data
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read key: %w", err)
	}
	for _, f := range keyFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read key: %w", err)
		}
		files[f] = data
	}
	k := &keyring{}
	for _, name := range append([]string{secretPath}, keyFiles...) {
		data, ok := files[name]
		if !ok {
			continue
		}
		if isOpenPGPKey(data) {
			err = k.addPGP(data, name, pass)
		} else {
			err = k.addSMIME(data, name, pass)
		}
		if err != nil {
			return nil, err
		}
	}
	if !k.canDecrypt() {
		return nil, fmt.Errorf("no decryption key: none in %s and no secret key among --key files (run sealmail keygen, or pass --key)", home)
	}
	return k, nil
}

// isOpenPGPKey tells OpenPGP key files (armored, or binary packets whose
// first byte has the high bit set, RFC 9580 §4.2) from PEM and PKCS#12
// (DER, starting with 0x30).
func isOpenPGPKey(data []byte) bool {
	trimmed := bytes.TrimLeft(data, " \t\r\n\xef\xbb\xbf")
	return bytes.HasPrefix(trimmed, []byte("-----BEGIN PGP ")) || (len(trimmed) > 0 && trimmed[0]&0x80 != 0)
}

func (k *keyring) addPGP(data []byte, name string, pass *passphrase) error {
	entities, err := endpoint.ReadKeys(data)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, ent := range entities {
		if endpoint.Locked(ent) {
			p, err := pass.get()
			if err != nil {
				return err
			}
			if err := endpoint.Unlock(ent, p); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	k.pgp = append(k.pgp, entities...)
	return nil
}

func (k *keyring) addSMIME(data []byte, name string, pass *passphrase) error {
	kp, err := smime.ReadKeyPair(data, "")
	if err != nil && !bytes.Contains(data, []byte("-----BEGIN ")) {
		// PKCS#12, usually protected: try the passphrase. (Encrypted PEM
		// keys are not supported by smime.ReadKeyPair.)
		p, perr := pass.get()
		if perr != nil {
			return fmt.Errorf("%s: %w", name, perr)
		}
		kp, err = smime.ReadKeyPair(data, string(p))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	k.smime = append(k.smime, kp)
	return nil
}
