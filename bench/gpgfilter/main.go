// Command gpgfilter is the reference point of the sealgate benchmark
// (bench/run.sh): an SMTP relay that encrypts each message the way the
// Python gateways (gpg-mailgate, GPG-Lacre, Zeyple) do, by running gpg once
// per message with default options (so gpg's own ZLIB compression is on;
// see encrypt for the one exception),
// wrapping the armored output as PGP/MIME and relaying it upstream over a
// new connection per message. It is a yardstick, not a product: no
// policy, no key lookup beyond "encrypt to -key", no header protection.
//
//	gpgfilter -listen 127.0.0.1:10027 -upstream 127.0.0.1:10026 -homedir GNUPGHOME -key FINGERPRINT
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:10027", "SMTP listen address")
	upstream := flag.String("upstream", "127.0.0.1:10026", "where encrypted messages go")
	homedir := flag.String("homedir", "", "GnuPG home holding the recipient's public key")
	key := flag.String("key", "", "recipient key (fingerprint or user ID) every message is encrypted to")
	seedFile := flag.Bool("seedfile", false, "let gpg use its random_seed file (gpg's default; concurrent gpg processes then serialise on its lock)")
	flag.Parse()
	if *homedir == "" || *key == "" {
		log.Fatal("gpgfilter: -homedir and -key are required")
	}
	f := &filter{upstream: *upstream, homedir: *homedir, key: *key, seedFile: *seedFile}
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{f: f}, nil }))
	s.Domain = "gpgfilter.invalid"
	s.MaxMessageBytes = 128 << 20
	s.MaxLineLength = 8192
	s.ReadTimeout, s.WriteTimeout = 2*time.Minute, 2*time.Minute
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); s.Close() }()
	if err := s.Serve(ln); err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
}

type filter struct {
	upstream, homedir, key string
	seedFile               bool
}

type session struct {
	f    *filter
	from string
	to   []string
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }
func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	enc, err := s.f.encrypt(msg)
	if err != nil {
		log.Print(err)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "encryption failed"}
	}
	if err := s.f.relay(s.from, s.to, wrap(msg, enc)); err != nil {
		log.Print(err)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 0}, Message: "upstream failed"}
	}
	return nil
}

// encrypt runs one gpg process, as the filter scripts do. Unless -seedfile,
// without gpg's random_seed file: concurrent gpg processes on one home
// otherwise queue for its lock (dotlock, which sleeps and retries), and 20
// sessions get ~70 messages/s instead of ~350 on two cores. The reference
// is meant to show what a gpg process per message costs, not that.
func (f *filter) encrypt(msg []byte) ([]byte, error) {
	args := []string{"--homedir", f.homedir, "--batch", "--no-tty", "--quiet", "--trust-model", "always"}
	if !f.seedFile {
		args = append(args, "--no-random-seed-file")
	}
	cmd := exec.Command("gpg", append(args, "--encrypt", "--armor", "--recipient", f.key)...)
	cmd.Stdin = bytes.NewReader(msg)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("gpg: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// wrap keeps the routing header fields and puts the encrypted message in
// an RFC 3156 multipart/encrypted body.
func wrap(msg, armored []byte) []byte {
	hdr, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	var b bytes.Buffer
	keep := false
	for _, line := range strings.SplitAfter(string(hdr)+"\r\n", "\r\n") {
		if line == "" || line[0] != ' ' && line[0] != '\t' { // not a continuation line
			name, _, _ := strings.Cut(line, ":")
			switch strings.ToLower(name) {
			case "from", "to", "cc", "date", "message-id", "subject":
				keep = true
			default:
				keep = false
			}
		}
		if keep {
			b.WriteString(line)
		}
	}
	const boundary = "gpgfilter-boundary"
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"" + boundary + "\"\r\n\r\n")
	b.WriteString("--" + boundary + "\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n")
	b.WriteString("--" + boundary + "\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n")
	b.Write(bytes.ReplaceAll(armored, []byte("\n"), []byte("\r\n")))
	b.WriteString("\r\n--" + boundary + "--\r\n")
	return b.Bytes()
}

// relay sends over a new upstream connection, as smtplib.SMTP() per message does.
func (f *filter) relay(from string, to []string, msg []byte) error {
	c, err := smtp.Dial(f.upstream)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("gpgfilter.invalid"); err != nil {
		return err
	}
	if err := c.SendMail(from, to, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}
