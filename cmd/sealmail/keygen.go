package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sealgate/sealgate/pgp/endpoint"
)

func cmdKeygen(args []string, e *env) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	email := fs.String("email", "", "")
	name := fs.String("name", "", "")
	home := fs.String("home", "", "")
	profile := fs.String("profile", string(endpoint.ProfileDefault), "")
	passFile := fs.String("passphrase-file", "", "")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) != 0 {
		return usageError(err)
	}
	if *email == "" {
		return usageError(errors.New("keygen: --email is required"))
	}
	dir, err := homeDir(*home)
	if err != nil {
		return err
	}
	secretPath, publicPath := filepath.Join(dir, secretFile), filepath.Join(dir, publicFile)
	if _, err := os.Stat(secretPath); err == nil {
		return fmt.Errorf("%s already holds a key (%s); use another --home", dir, secretFile)
	}
	if err := prepareHome(dir); err != nil {
		return err
	}
	pass, err := (&passphrase{file: *passFile, env: e, fromStdin: true, confirm: true}).get()
	if err != nil {
		return err
	}
	key, err := endpoint.Generate(endpoint.GenerateOptions{
		Address: *email, Name: *name, Profile: endpoint.Profile(*profile), Passphrase: pass, Now: e.now,
	})
	if err != nil {
		return err
	}
	if err := writeNewFile(secretPath, key.Secret); err != nil {
		return fmt.Errorf("store secret key: %w", err)
	}
	if err := writeNewFile(publicPath, key.Public); err != nil {
		os.Remove(secretPath)
		return fmt.Errorf("store public key: %w", err)
	}
	fmt.Fprintf(e.stdout, "fingerprint: %s\npublic key:  %s\n", key.Fingerprint, publicPath)
	return nil
}

func cmdExport(args []string, e *env) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	home := fs.String("home", "", "")
	secret := fs.Bool("secret", false, "")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) != 0 {
		return usageError(err)
	}
	dir, err := homeDir(*home)
	if err != nil {
		return err
	}
	file := publicFile
	if *secret {
		file = secretFile
	}
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return fmt.Errorf("no key in %s (run sealmail keygen): %w", dir, err)
	}
	keys, err := endpoint.ReadKeys(data)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if endpoint.HasSecret(k) != *secret {
			return fmt.Errorf("%s does not hold what its name says", filepath.Join(dir, file))
		}
		if *secret && !endpoint.Locked(k) {
			return fmt.Errorf("%s is not passphrase-protected; refusing to export it", filepath.Join(dir, file))
		}
	}
	if _, err := e.stdout.Write(data); err != nil {
		return err
	}
	if *secret {
		fmt.Fprintln(e.stderr, "sealmail: this is your secret key, protected by your passphrase; import it only into your own clients")
	}
	return nil
}
