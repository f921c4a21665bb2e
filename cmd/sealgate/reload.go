package main

import (
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/sealgate/sealgate/config"
	"github.com/sealgate/sealgate/gateway"
)

// daemon is a running `sealgate serve`.
type daemon struct {
	file  string // config file; "" = built-in defaults
	cfg   *config.Config
	log   *slog.Logger
	level *slog.LevelVar
	gw    *gateway.Server
}

// watchReload reloads the configuration on SIGHUP until the returned
// function is called.
func (d *daemon) watchReload() func() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				d.reload()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}

// reload re-reads the config file and applies what can change while
// connections stay open: policy, upstream relay settings, header
// protection and the log level. Transactions in flight keep the settings
// they started with. A config with any error changes nothing.
func (d *daemon) reload() {
	cfg, err := loadConfig(d.file)
	if err == nil {
		var st gateway.Settings
		if st, err = settings(cfg); err == nil {
			err = d.gw.Reload(st)
		}
	}
	if err != nil {
		d.log.Error("reload failed; the running configuration stays in force", "err", err)
		return
	}
	if err := setLevel(d.level, cfg.Log.Level); err != nil {
		d.log.Error("reload: log level unchanged", "err", err)
	}
	if restart := needsRestart(d.cfg, cfg); len(restart) > 0 {
		d.log.Warn("reload: these settings take effect only after a restart", "settings", restart)
	}
	d.cfg = cfg
	d.log.Info("configuration reloaded", "policy_rules", len(cfg.Policy), "upstream", cfg.SMTP.Upstream)
}

// needsRestart lists the changed settings that a reload does not apply.
func needsRestart(old, cur *config.Config) []string {
	var out []string
	check := func(name string, changed bool) {
		if changed {
			out = append(out, name)
		}
	}
	o, c := old.SMTP, cur.SMTP
	check("data_dir", old.DataDir != cur.DataDir)
	check("database", old.Database != cur.Database)
	check("smtp.listen", o.Listen != c.Listen)
	check("smtp.allowed_networks", !slices.Equal(o.AllowedNetworks, c.AllowedNetworks))
	check("smtp limits and timeouts", o.MaxMessageBytes != c.MaxMessageBytes || o.MaxRecipients != c.MaxRecipients ||
		o.MaxLineLength != c.MaxLineLength || o.MaxHeaderBytes != c.MaxHeaderBytes || o.MaxConnections != c.MaxConnections ||
		o.CommandTimeout != c.CommandTimeout || o.DataTimeout != c.DataTimeout || o.WriteTimeout != c.WriteTimeout)
	check("smtp.tls_cert/tls_key", o.TLSCert != c.TLSCert || o.TLSKey != c.TLSKey)
	check("http", old.HTTP != cur.HTTP)
	check("directory.domains", !slices.Equal(old.Directory.Domains, cur.Directory.Domains))
	check("log.format", old.Log.Format != cur.Log.Format)
	return out
}
