package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/term"
)

// Files in the sealmail home directory.
const (
	secretFile = "secret.asc" // armored secret key, passphrase-protected
	publicFile = "public.asc" // armored public key
)

type nowFunc = func() time.Time

// env is the outside world of one run; tests replace it.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// openTTY opens the terminal to ask for a passphrase on when stdin
	// carries the message; nil means /dev/tty.
	openTTY func() (*os.File, error)
	getenv  func(string) string
	now     nowFunc
}

// homeDir is --home, or sealmail under the user's configuration directory
// ($XDG_CONFIG_HOME or ~/.config on Linux).
func homeDir(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no --home and no user configuration directory: %w", err)
	}
	return filepath.Join(dir, "sealmail"), nil
}

// prepareHome creates dir with mode 0700, or checks that an existing one
// is private: a secret key must not sit where other users can list or
// replace it.
func prepareHome(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create home: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is accessible to other users (mode %04o); keep sealmail's keys in a private directory (chmod 700 %s)", dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// writeNewFile creates path with mode 0600; it never replaces a file.
func writeNewFile(path string, data []byte) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

// maxPassphraseFile bounds --passphrase-file.
const maxPassphraseFile = 64 << 10

// passphrase is read once, when first needed: from --passphrase-file, or
// typed without echo on a terminal.
type passphrase struct {
	file string
	env  *env
	// fromStdin: prompt on stdin when it is a terminal (keygen); otherwise
	// stdin is the message and the prompt goes to the terminal (/dev/tty).
	fromStdin bool
	confirm   bool // ask twice (a new passphrase)

	done  bool
	value []byte
	err   error
}

func (p *passphrase) get() ([]byte, error) {
	if !p.done {
		p.done = true
		p.value, p.err = p.read()
	}
	return p.value, p.err
}

func (p *passphrase) read() ([]byte, error) {
	if p.file != "" {
		data, err := os.ReadFile(p.file)
		if err != nil {
			return nil, fmt.Errorf("passphrase file: %w", err)
		}
		if len(data) > maxPassphraseFile {
			return nil, errors.New("passphrase file: larger than 64 KiB")
		}
		// The first line, as gpg --passphrase-file reads it.
		line, _, _ := bytes.Cut(data, []byte("\n"))
		return bytes.TrimSuffix(line, []byte("\r")), nil
	}
	tty, prompt, closeTTY, err := p.terminal()
	if err != nil {
		return nil, err
	}
	defer closeTTY()
	first, err := ask(tty, prompt, "Passphrase: ")
	if err != nil || !p.confirm {
		return first, err
	}
	second, err := ask(tty, prompt, "Repeat the passphrase: ")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(first, second) {
		return nil, errors.New("the passphrases differ")
	}
	return first, nil
}

// terminal returns the terminal to read from and where to prompt.
func (p *passphrase) terminal() (*os.File, io.Writer, func(), error) {
	if p.fromStdin {
		if f, ok := p.env.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return f, p.env.stderr, func() {}, nil
		}
		return nil, nil, nil, errors.New("no passphrase: standard input is not a terminal; use --passphrase-file FILE")
	}
	open := p.env.openTTY
	if open == nil {
		open = func() (*os.File, error) { return os.OpenFile("/dev/tty", os.O_RDWR, 0) }
	}
	tty, err := open()
	if err != nil || !term.IsTerminal(int(tty.Fd())) {
		if tty != nil {
			tty.Close()
		}
		return nil, nil, nil, errors.New("no passphrase: no terminal to ask on; use --passphrase-file FILE")
	}
	return tty, tty, func() { tty.Close() }, nil
}

func ask(tty *os.File, prompt io.Writer, question string) ([]byte, error) {
	fd := int(tty.Fd())
	restore, err := echoOff(fd)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	defer restore()
	fmt.Fprint(prompt, question)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(prompt)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	return b, nil
}
