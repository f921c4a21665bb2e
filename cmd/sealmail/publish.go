package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sealgate/sealgate/pgp/endpoint"
)

// maxResponseBytes bounds what we read of a directory's answer.
const maxResponseBytes = 1 << 20

func cmdPublish(args []string, e *env) error {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	directory := fs.String("directory", "", "")
	tokenFile := fs.String("token-file", "", "")
	home := fs.String("home", "", "")
	caFile := fs.String("ca-file", "", "")
	timeout := fs.Duration("timeout", 30*time.Second, "")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) != 0 {
		return usageError(err)
	}
	if *directory == "" {
		return usageError(errors.New("publish: --directory is required"))
	}
	target, err := adminURL(*directory)
	if err != nil {
		return err
	}
	dir, err := homeDir(*home)
	if err != nil {
		return err
	}
	key, err := publicKey(dir)
	if err != nil {
		return err
	}
	token, err := readToken(*tokenFile)
	if err != nil {
		return err
	}
	tlsConf, err := tlsConfig(*caFile)
	if err != nil {
		return err
	}
	client := &http.Client{
		Timeout:   *timeout,
		Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: http.ProxyFromEnvironment},
		// A bearer token is never carried to where a redirect points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(key))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/pgp-keys")
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("publish: read answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("publish: the directory answered %s: %s", resp.Status, serverError(body))
	}
	printPublishResult(e, body)
	return nil
}

// adminURL is the directory's key import endpoint. The token travels in
// it, so plain HTTP is accepted only to the local machine.
func adminURL(directory string) (string, error) {
	u, err := url.Parse(directory)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("publish: --directory %q is not a URL", directory)
	}
	switch u.Scheme {
	case "https":
	case "http":
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return "", fmt.Errorf("publish: refusing to send the token over plain HTTP to %s; use https", u.Host)
		}
	default:
		return "", fmt.Errorf("publish: --directory must be an https URL, not %q", directory)
	}
	return strings.TrimSuffix(u.String(), "/") + "/api/v1/keys", nil
}

// publicKey reads the public key in home, checking that it is one.
func publicKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, publicFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("no public key in %s (run sealmail keygen): %w", dir, err)
	}
	keys, err := endpoint.ReadKeys(data)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if endpoint.HasSecret(k) {
			return nil, fmt.Errorf("%s holds secret key material; refusing to publish it", path)
		}
	}
	return data, nil
}

func readToken(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	token := strings.TrimSpace(line)
	if token == "" {
		return "", fmt.Errorf("token file %s is empty", file)
	}
	return token, nil
}

// tlsConfig uses the system roots, or only the CA certificates in caFile.
func tlsConfig(caFile string) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return conf, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	conf.RootCAs = pool
	return conf, nil
}

// serverError is the "error" of a JSON answer, or the start of the body.
func serverError(body []byte) string {
	var answer struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &answer) == nil && answer.Error != "" {
		return answer.Error
	}
	text := strings.TrimSpace(string(body))
	if len(text) > 200 {
		text = text[:200] + "…"
	}
	if text == "" {
		return "(no message)"
	}
	return text
}

// printPublishResult prints one line per certificate of the directory's
// answer (keydir/httpd: {"results": [{fingerprint, addresses, imported,
// error}]}), or the answer as it is.
func printPublishResult(e *env, body []byte) {
	var answer struct {
		Results []struct {
			Fingerprint string   `json:"fingerprint"`
			Addresses   []string `json:"addresses"`
			Imported    bool     `json:"imported"`
			Error       string   `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || len(answer.Results) == 0 {
		fmt.Fprintf(e.stdout, "%s\n", bytes.TrimSpace(body))
		return
	}
	for _, r := range answer.Results {
		if r.Imported {
			fmt.Fprintf(e.stdout, "published %s %s\n", r.Fingerprint, strings.Join(r.Addresses, " "))
		} else {
			fmt.Fprintf(e.stdout, "not published %s: %s\n", r.Fingerprint, r.Error)
		}
	}
}
