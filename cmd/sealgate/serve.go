package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sealgate/sealgate/config"
	"github.com/sealgate/sealgate/gateway"
	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/gateway/relay"
	"github.com/sealgate/sealgate/internal/gctune"
	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/keydir/httpd"
)

// shutdownGrace is how long SIGTERM waits for transactions in flight.
const shutdownGrace = 60 * time.Second

func cmdServe(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	file := fs.String("config", "", "config file (default: built-in defaults)")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		return errUsage
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	log, err := newLogger(cfg.Log, level, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// For profiling under load (bench/README.md): a CPU profile of the
	// whole run, written at exit.
	if path := os.Getenv("SEALGATE_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	// The live heap of a busy gateway is a few MiB; without a floor the
	// collector would run every few MiB of allocation (internal/gctune).
	defer gctune.Floor(heapFloor)()
	return serve(ctx, &daemon{file: *file, cfg: cfg, log: log, level: level})
}

// heapFloor is the heap size below which serve does not collect garbage
// (unless GOGC is set in the environment).
const heapFloor = 32 << 20

// newLogger builds the logger; level is kept so a reload can change it.
func newLogger(c config.Log, level *slog.LevelVar, w io.Writer) (*slog.Logger, error) {
	if err := setLevel(level, c.Level); err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func setLevel(level *slog.LevelVar, name string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(name)); err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	level.Set(l)
	return nil
}

func serve(ctx context.Context, d *daemon) error {
	cfg, log := d.cfg, d.log
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := gateway.NewMetrics(reg)
	if err != nil {
		return err
	}
	gw, err := newGateway(cfg, store, log, metrics)
	if err != nil {
		return err
	}
	d.gw = gw
	stopReload := d.watchReload()
	defer stopReload()
	// No TCP keepalive probes on SMTP connections: the command and data
	// timeouts already close a connection whose peer went away, and the
	// probes' socket options cost four system calls per connection.
	smtpLn, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", cfg.SMTP.Listen)
	if err != nil {
		return fmt.Errorf("smtp.listen: %w", err)
	}
	httpLn, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		smtpLn.Close()
		return fmt.Errorf("http.listen: %w", err)
	}
	hs, err := newHTTPServer(cfg, store, log, reg, smtpLn.Addr().String())
	if err != nil {
		smtpLn.Close()
		httpLn.Close()
		return err
	}
	log.Info("sealgate started", "smtp", smtpLn.Addr().String(), "upstream", cfg.SMTP.Upstream,
		"http", httpLn.Addr().String(), "database", describeDatabase(cfg))

	errc := make(chan error, 2)
	go func() { errc <- gw.Serve(smtpLn) }()
	go func() { errc <- serveHTTP(hs, httpLn) }()
	select {
	case <-ctx.Done():
		log.Info("shutting down: finishing transactions in flight")
	case err = <-errc:
		log.Error("listener failed", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	_ = hs.Shutdown(sctx)
	if serr := gw.Shutdown(sctx); serr != nil {
		log.Warn("shutdown did not finish cleanly", "err", serr)
	}
	return err
}

// HTTP server limits: a directory request is small and quick; these stop
// slow or oversized clients from holding connections and memory.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 30 * time.Second
	httpWriteTimeout      = 60 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	httpMaxHeaderBytes    = 64 << 10
)

// newHTTPServer is the directory's HTTP server; with http.tls_cert and
// http.tls_key it has the TLS configuration that serveHTTP uses.
func newHTTPServer(cfg *config.Config, store keydir.Store, log *slog.Logger, reg *prometheus.Registry, smtpAddr string) (*http.Server, error) {
	h, err := httpHandler(cfg, store, log, reg, smtpAddr)
	if err != nil {
		return nil, err
	}
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.HTTP.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("http.tls_cert: %w", err)
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return hs, nil
}

// serveHTTP serves HTTPS when hs has a TLS configuration, else plain HTTP.
func serveHTTP(hs *http.Server, ln net.Listener) error {
	if hs.TLSConfig != nil {
		return hs.ServeTLS(ln, "", "")
	}
	return hs.Serve(ln)
}

// httpHandler is the HTTP side: the key directory (WKD, VKS, HKP, the
// admin API and /healthz, from keydir/httpd), /metrics and /readyz.
func httpHandler(cfg *config.Config, store keydir.Store, log *slog.Logger, reg *prometheus.Registry, smtpAddr string) (http.Handler, error) {
	dir, err := httpd.New(httpd.Options{
		Store:   store,
		Domains: cfg.Directory.Domains,
		Logger:  log.With("component", "directory-http"),
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context(), store, smtpAddr); err != nil {
			log.Warn("not ready", "err", err)
			http.Error(w, "not ready\n", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/", dir)
	return mux, nil
}

// ready reports whether the gateway can do its job: the database answers
// and the SMTP listener accepts connections.
func ready(ctx context.Context, store keydir.Store, smtpAddr string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := store.Lookup(ctx, "readyz@readyz.invalid"); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", smtpAddr)
	if err != nil {
		return fmt.Errorf("smtp listener: %w", err)
	}
	return c.Close()
}

func describeDatabase(cfg *config.Config) string {
	if cfg.Database == "" {
		return "sqlite " + filepath.Join(cfg.DataDir, "sealgate.db")
	}
	return "postgresql"
}

func openStore(ctx context.Context, cfg *config.Config) (keydir.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	return keydir.Open(ctx, cfg.Database, cfg.DataDir)
}

func newGateway(cfg *config.Config, store keydir.Store, log *slog.Logger, metrics *gateway.Metrics) (*gateway.Server, error) {
	s := cfg.SMTP
	st, err := settings(cfg)
	if err != nil {
		return nil, err
	}
	var tlsCfg *tls.Config
	if s.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("smtp.tls_cert: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	validator, err := newSMIMEValidator(cfg.SMIME, log)
	if err != nil {
		return nil, err
	}
	spoolDir := filepath.Join(cfg.DataDir, "spool")
	if err := os.MkdirAll(spoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("spool directory: %w", err)
	}
	return gateway.New(gateway.Options{
		Hostname:         s.Hostname,
		AllowedNetworks:  s.Networks,
		TLSConfig:        tlsCfg,
		MaxMessageBytes:  s.MaxMessageBytes,
		MaxRecipients:    s.MaxRecipients,
		MaxLineLength:    s.MaxLineLength,
		MaxHeaderBytes:   int64(s.MaxHeaderBytes),
		MaxConnections:   s.MaxConnections,
		CommandTimeout:   s.CommandTimeout.Duration,
		DataTimeout:      s.DataTimeout.Duration,
		WriteTimeout:     s.WriteTimeout.Duration,
		LookupTimeout:    s.UpstreamTimeout.Duration,
		SpoolDir:         spoolDir,
		SpoolMemoryBytes: s.SpoolMemoryBytes,
		ProtectHeaders:   st.ProtectHeaders,
		Policy:           st.Policy,
		Directory:        store,
		Relay:            st.Relay,
		Logger:           log,
		Metrics:          metrics,
		Audit:            store,
		SMIME:            validator,
		SMIMEMaxBytes:    cfg.SMIME.MaxMessageBytes,
	})
}

// settings builds what a reload may change.
func settings(cfg *config.Config) (gateway.Settings, error) {
	pol, err := newPolicy(cfg.Policy)
	if err != nil {
		return gateway.Settings{}, err
	}
	rel, err := newRelay(cfg.SMTP)
	if err != nil {
		return gateway.Settings{}, err
	}
	return gateway.Settings{Policy: pol, Relay: rel, ProtectHeaders: cfg.ProtectHeaders()}, nil
}

func newPolicy(rules []config.PolicyRule) (*policy.Policy, error) {
	out := make([]policy.Rule, len(rules))
	for i, r := range rules {
		out[i] = policy.Rule{Match: r.Match, Encrypt: policy.Requirement(r.Encrypt), Format: policy.Format(r.Format)}
	}
	return policy.New(out)
}

func newRelay(s config.SMTP) (*relay.Relay, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.UpstreamTLSServerName}
	if s.UpstreamTLSCA != "" {
		pem, err := os.ReadFile(s.UpstreamTLSCA)
		if err != nil {
			return nil, fmt.Errorf("smtp.upstream_tls_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("smtp.upstream_tls_ca: no PEM certificate found")
		}
		tlsCfg.RootCAs = pool
	}
	return relay.New(relay.Options{
		Addr:        s.Upstream,
		Hostname:    s.Hostname,
		TLS:         s.UpstreamTLS,
		TLSConfig:   tlsCfg,
		Timeout:     s.UpstreamTimeout.Duration,
		DataTimeout: s.UpstreamTimeout.Duration,
	})
}
