// Command smtpbench runs the sealgate SMTP benchmark; bench/run.sh builds
// the binaries it needs and starts it (see bench/README.md).
//
// On loopback it starts Postfix's smtp-sink as upstream, makes the keys
// (gpg: x25519 and RSA-3072, ten more x25519; openssl: an RSA-2048 S/MIME
// certificate and its CA), imports them into a fresh sealgate data dir and,
// for each message size, measures:
//
//   - smtp-source → smtp-sink directly (the ceiling) and smtpload → smtp-sink;
//   - a fresh `sealgate serve` per scenario (policy never, PGP x25519, PGP
//     RSA-3072, S/MIME RSA-2048, PGP to 10 recipients) and the gpg-per-message
//     reference filter: throughput over N sessions (closed loop), gateway CPU
//     per message, then latency at half that throughput against the direct
//     path at the same rate, then peak RSS (VmHWM);
//   - one 50 MiB message through a fresh gateway (peak RSS).
//
// It writes results.json, results.md and throughput.png to -out.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// msgSize is one message size of the run.
type msgSize struct {
	Name     string `json:"name"`
	Bytes    int    `json:"bytes"`
	Sessions int    `json:"sessions"`
	minLat   int    // latency samples wanted at least
	warm     int    // warm-up messages on a fresh process
}

// scenario is one path under test behind the load generator.
type scenario struct {
	ID    string   `json:"id"`
	Label string   `json:"label"`
	Rcpts []string `json:"recipients"`
	gpg   bool     // the gpg-per-message reference filter instead of sealgate
}

var scenarios = []scenario{
	{ID: "never", Label: "sealgate, policy never (passthrough)", Rcpts: []string{"plain@plain.bench.example"}},
	{ID: "pgp-x25519", Label: "sealgate, PGP/MIME x25519", Rcpts: []string{"alice@x25519.bench.example"}},
	{ID: "pgp-rsa3072", Label: "sealgate, PGP/MIME RSA-3072", Rcpts: []string{"bob@rsa3072.bench.example"}},
	{ID: "smime-rsa2048", Label: "sealgate, S/MIME RSA-2048", Rcpts: []string{"carol@smime.bench.example"}},
	{ID: "pgp-x25519-10rcpt", Label: "sealgate, PGP/MIME x25519, 10 recipients", Rcpts: tenRcpts()},
	{ID: "gpg-filter", Label: "gpg once per message (reference filter)", Rcpts: []string{"alice@x25519.bench.example"}, gpg: true},
}

func tenRcpts() []string {
	var r []string
	for i := 1; i <= 10; i++ {
		r = append(r, fmt.Sprintf("r%02d@ten.bench.example", i))
	}
	return r
}

const sender = "sender@corp.bench.example"

// loadResult is smtpload's JSON output.
type loadResult struct {
	Sent     int     `json:"sent"`
	Failed   int     `json:"failed"`
	ElapsedS float64 `json:"elapsed_s"`
	MsgsPerS float64 `json:"msgs_per_s"`
	MBPerS   float64 `json:"mb_per_s"`
	P50MS    float64 `json:"p50_ms"`
	P90MS    float64 `json:"p90_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	Rate     float64 `json:"rate,omitempty"`
	Behind   int     `json:"behind,omitempty"`
	FirstErr string  `json:"first_error,omitempty"`
	Size     int     `json:"size"`
	// Filled in here, from the loader's rusage.
	LoaderCPUMS float64 `json:"loader_cpu_ms"`
}

// row is one scenario at one size.
type row struct {
	Size        string      `json:"size"`
	Scenario    string      `json:"scenario"`
	Label       string      `json:"label"`
	Throughput  loadResult  `json:"throughput"`        // closed loop
	Latency     *loadResult `json:"latency,omitempty"` // open loop at half the throughput
	Direct      *loadResult `json:"direct,omitempty"`  // straight into the sink at the same rate
	CPUMSPerMsg float64     `json:"cpu_ms_per_msg,omitempty"`
	SinkCPUMS   float64     `json:"sink_cpu_ms_per_msg,omitempty"`
	PeakRSSMiB  float64     `json:"peak_rss_mib,omitempty"`
	Failed      string      `json:"failed,omitempty"` // why the scenario has no figures
	// smtp-source as the client instead of smtpload (never and pgp-x25519).
	SourceMsgsPerS float64 `json:"smtp_source_msgs_per_s,omitempty"`
	SourceErr      string  `json:"smtp_source_error,omitempty"`
}

type bigResult struct {
	Scenario   string  `json:"scenario"`
	Label      string  `json:"label"`
	Bytes      int     `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	Error      string  `json:"error,omitempty"`
}

type report struct {
	Started  time.Time          `json:"started"`
	Finished time.Time          `json:"finished"`
	Mode     string             `json:"mode"`
	Env      map[string]string  `json:"environment"`
	Sizes    []msgSize          `json:"sizes"`
	ThrSecs  float64            `json:"throughput_seconds"`
	LatSecs  float64            `json:"latency_seconds"`
	Ceiling  map[string]float64 `json:"ceiling_smtp_source_msgs_per_s"` // mean of CeilingRuns
	// CeilingRuns: the ceiling measured before and after the size's scenarios.
	CeilingRuns map[string][]float64 `json:"ceiling_runs_msgs_per_s,omitempty"`
	Rows        []row                `json:"rows"`
	Big         []bigResult          `json:"big,omitempty"`
	Paired      []paired             `json:"paired,omitempty"` // see pairedRun
	Notes       []string             `json:"notes,omitempty"`
}

type bench struct {
	work, bin, out string
	thr, lat       time.Duration
	clkTck         float64
	sinkAddr       string
	sink           *child
	gnupg, gpgKey  string // gpgKey: the x25519 key the reference filter encrypts to
	filterHome     string // the reference filter's GnuPG home: public keys only
	caPEM          string
	dataDir        string
	keyFiles       []string
	pidFile        *os.File
	mu             sync.Mutex
	children       map[*child]bool
	ctx            context.Context
}

func main() {
	work := flag.String("work", "", "scratch directory (created by run.sh, removed by it)")
	bin := flag.String("bin", "", "directory holding sealgate, smtpload and gpgfilter binaries")
	out := flag.String("out", "", "results directory to write")
	quick := flag.Bool("quick", false, "short runs (about 3 minutes instead of about 6)")
	only := flag.String("sizes", "4KiB,100KiB,10MiB", "sizes to run, comma-separated")
	scen := flag.String("scenarios", "", "scenario IDs to run, comma-separated (default: all)")
	big := flag.Bool("big", true, "also send one 50 MiB message (peak RSS)")
	limit := flag.Duration("timeout", 40*time.Minute, "bound on the whole run")
	redo := flag.String("report", "", "only rewrite results.md and throughput.png in -out from this results.json")
	flag.Parse()
	if *redo != "" && *out != "" {
		if err := rewrite(*redo, *out); err != nil {
			fatalf("smtpbench: %v", err)
		}
		return
	}
	if *work == "" || *bin == "" || *out == "" {
		fatalf("smtpbench: -work, -bin and -out are required (use bench/run.sh)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	b := &bench{work: *work, bin: *bin, out: *out, children: map[*child]bool{}, ctx: ctx}
	go func() {
		s := <-sigc
		fmt.Fprintf(os.Stderr, "smtpbench: %v: stopping everything\n", s)
		cancel()
		b.killAll()
		os.Exit(130)
	}()
	err := b.main(*quick, *only, *scen, *big)
	b.killAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "smtpbench:", err)
		os.Exit(1)
	}
}

// rewrite redraws the table and chart of an earlier run.
func rewrite(file, out string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	rep := &report{}
	if err := json.Unmarshal(raw, rep); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	work, err := os.MkdirTemp("", "smtpbench-report-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	b := &bench{work: work, out: out}
	return b.write(rep)
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (b *bench) main(quick bool, only, scen string, big bool) error {
	rep := &report{Started: time.Now(), Mode: "full", Ceiling: map[string]float64{}, CeilingRuns: map[string][]float64{}}
	b.thr, b.lat = 6*time.Second, 4*time.Second
	if quick {
		rep.Mode, b.thr, b.lat = "quick", 2*time.Second, 1500*time.Millisecond
	}
	rep.ThrSecs, rep.LatSecs = b.thr.Seconds(), b.lat.Seconds()
	all := []msgSize{
		{Name: "4KiB", Bytes: 4 << 10, Sessions: 20, minLat: 200, warm: 40},
		{Name: "100KiB", Bytes: 100 << 10, Sessions: 20, minLat: 200, warm: 40},
		{Name: "10MiB", Bytes: 10 << 20, Sessions: 4, minLat: 12, warm: 4},
	}
	for _, s := range all {
		if slices.Contains(strings.Split(only, ","), s.Name) {
			rep.Sizes = append(rep.Sizes, s)
		}
	}
	if len(rep.Sizes) == 0 {
		return fmt.Errorf("-sizes %q names none of 4KiB, 100KiB, 10MiB", only)
	}
	scens := scenarios
	if scen != "" {
		scens = nil
		for _, s := range scenarios {
			if slices.Contains(strings.Split(scen, ","), s.ID) {
				scens = append(scens, s)
			}
		}
	}
	if err := os.MkdirAll(b.out, 0o755); err != nil {
		return err
	}
	var err error
	if b.pidFile, err = os.Create(filepath.Join(b.work, "pids")); err != nil {
		return err
	}
	b.clkTck = 100
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			b.clkTck = v
		}
	}
	rep.Env = environment()
	// smtp-sink needs to reach its dump directory as nobody.
	if err := os.Chmod(b.work, 0o711); err != nil {
		return err
	}

	logf("making keys (gpg, openssl)")
	if err := b.makeKeys(); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	defer func() {
		for _, h := range []string{b.gnupg, b.filterHome} {
			_ = exec.Command("gpgconf", "--homedir", h, "--kill", "all").Run()
		}
	}()

	b.sinkAddr = freeAddr()
	args := []string{b.sinkAddr, "1024"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	if b.sink, err = b.start("smtp-sink", "smtp-sink", nil, args...); err != nil {
		return err
	}
	if err := b.sink.waitGreeting(b.sinkAddr); err != nil {
		return err
	}
	// Import once: every gateway of the run shares the data dir (one at a time).
	cfg, _, _ := b.writeConfig("import", b.sinkAddr)
	if out, err := b.run(2*time.Minute, filepath.Join(b.bin, "sealgate"), append([]string{"keys", "import", "--config", cfg}, b.keyFiles...)...); err != nil {
		return fmt.Errorf("sealgate keys import: %v\n%s", err, out)
	}
	logf("checking that each scenario produces what it claims")
	if err := b.verify(scens); err != nil {
		return fmt.Errorf("verification: %w", err)
	}

	for _, sz := range rep.Sizes {
		c, err := b.ceiling(sz)
		if err != nil {
			return fmt.Errorf("ceiling %s: %w", sz.Name, err)
		}
		rep.Ceiling[sz.Name], rep.CeilingRuns[sz.Name] = c, []float64{c}
		logf("%-7s smtp-source -> smtp-sink: %.0f msg/s", sz.Name, c)
		d, err := b.load(b.sinkAddr, sz, scenarios[0].Rcpts, "-c", strconv.Itoa(sz.Sessions), "-d", b.thr.String(), "-min", strconv.Itoa(2*sz.Sessions))
		if err != nil {
			return fmt.Errorf("direct %s: %w", sz.Name, err)
		}
		logf("%-7s smtpload -> smtp-sink:    %.0f msg/s", sz.Name, d.MsgsPerS)
		rep.Rows = append(rep.Rows, row{Size: sz.Name, Scenario: "direct", Label: "smtpload → smtp-sink (no hop)", Throughput: *d})
		for _, sc := range scens {
			r := b.scenario(sz, sc)
			if r.Failed != "" {
				logf("%-7s %-40s FAILED: %s", sz.Name, sc.Label, r.Failed)
			} else {
				logf("%-7s %-40s %8.1f msg/s %7.1f MB/s  p50/p99 %.1f/%.1f ms (direct %.1f/%.1f)  cpu %.2f ms/msg  rss %.0f MiB",
					sz.Name, sc.Label, r.Throughput.MsgsPerS, r.Throughput.MBPerS, r.Latency.P50MS, r.Latency.P99MS,
					r.Direct.P50MS, r.Direct.P99MS, r.CPUMSPerMsg, r.PeakRSSMiB)
			}
			rep.Rows = append(rep.Rows, r)
			if b.ctx.Err() != nil {
				return b.ctx.Err()
			}
		}
		if slices.ContainsFunc(scens, func(s scenario) bool { return s.ID == "never" }) &&
			slices.ContainsFunc(scens, func(s scenario) bool { return s.ID == "pgp-x25519" }) {
			p := b.pairedRun(sz, rep.Ceiling[sz.Name])
			if p.Failed != "" {
				logf("%-7s interleaved headline ratios FAILED: %s", sz.Name, p.Failed)
			} else {
				oc, on := p.ratios()
				logf("%-7s interleaved, medians of %d rounds: ceiling %.0f, passthrough %.0f, PGP %.0f msg/s; PGP %.2f x ceiling, %.2f x passthrough",
					sz.Name, pairedRounds, median(p.Ceiling), median(p.Never), median(p.PGP), median(oc), median(on))
			}
			rep.Paired = append(rep.Paired, p)
		}
		// Once more after the scenarios: on a shared machine the ceiling
		// drifts, and every ratio of the size rests on it.
		c, err = b.ceiling(sz)
		if err != nil {
			return fmt.Errorf("ceiling %s: %w", sz.Name, err)
		}
		runs := append(rep.CeilingRuns[sz.Name], c)
		rep.CeilingRuns[sz.Name], rep.Ceiling[sz.Name] = runs, (runs[0]+runs[1])/2
		logf("%-7s smtp-source -> smtp-sink: %.0f msg/s (again; ratios use the mean, %.0f)", sz.Name, c, rep.Ceiling[sz.Name])
	}
	if big {
		for _, sc := range []scenario{scenarios[0], scenarios[1]} {
			r := b.bigMessage(sc, 50<<20)
			logf("50 MiB  %-40s %.2f s, peak RSS %.0f MiB %s", sc.Label, r.Seconds, r.PeakRSSMiB, r.Error)
			rep.Big = append(rep.Big, r)
		}
	}
	rep.Finished = time.Now()
	return b.write(rep)
}

// environment records what the numbers depend on.
func environment() map[string]string {
	env := map[string]string{"cpus": strconv.Itoa(runtime.NumCPU()), "goarch": runtime.GOARCH}
	sh := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(string(out))
	}
	env["host"], _ = os.Hostname()
	env["kernel"] = sh("uname", "-sr")
	env["go"] = sh("go", "env", "GOVERSION")
	env["gpg"] = strings.SplitN(sh("gpg", "--version"), "\n", 2)[0]
	env["commit"] = sh("git", "rev-parse", "--short", "HEAD")
	if sh("git", "status", "--porcelain", "--untracked-files=no") != "" {
		env["commit"] += " (working tree has uncommitted changes)"
	}
	if f, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(f), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				env["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	// run.sh reads it before building, which would raise it.
	if v := os.Getenv("SEALGATE_BENCH_LOADAVG"); v != "" {
		env["loadavg_at_start"] = v
	} else if f, err := os.ReadFile("/proc/loadavg"); err == nil {
		env["loadavg_at_start"] = strings.Join(strings.Fields(string(f))[:3], " ")
	}
	return env
}

// ---- keys and config ----

func (b *bench) makeKeys() error {
	b.gnupg = filepath.Join(b.work, "gnupg")
	keys := filepath.Join(b.work, "keys")
	for _, d := range []string{b.gnupg, keys} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	gpg := func(args ...string) ([]byte, error) {
		base := []string{"--homedir", b.gnupg, "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""}
		return b.run(2*time.Minute, "gpg", append(base, args...)...)
	}
	type k struct{ uid, algo string }
	ks := []k{{"Alice <alice@x25519.bench.example>", "future-default"}, {"Bob <bob@rsa3072.bench.example>", "rsa3072"}}
	for _, r := range tenRcpts() {
		ks = append(ks, k{"<" + r + ">", "future-default"})
	}
	for _, kk := range ks {
		if out, err := gpg("--quick-gen-key", kk.uid, kk.algo, "default", "never"); err != nil {
			return fmt.Errorf("gpg --quick-gen-key %s: %v\n%s", kk.algo, err, out)
		}
	}
	// An RSA key as GnuPG makes it by default: an RSA-3072 primary key for
	// signing and an RSA-3072 encryption subkey.
	bob, err := fingerprint(gpg, "bob@rsa3072.bench.example")
	if err != nil {
		return err
	}
	if out, err := gpg("--quick-add-key", bob, "rsa3072", "encr", "never"); err != nil {
		return fmt.Errorf("gpg --quick-add-key: %v\n%s", err, out)
	}
	out, err := gpg("--armor", "--export")
	if err != nil {
		return fmt.Errorf("gpg --export: %v", err)
	}
	pub := filepath.Join(keys, "pgp.asc")
	if err := os.WriteFile(pub, out, 0o600); err != nil {
		return err
	}
	b.keyFiles = append(b.keyFiles, pub)
	if b.gpgKey, err = fingerprint(gpg, "alice@x25519.bench.example"); err != nil {
		return err
	}
	// The reference filter gets a home with the public keys only, as a
	// filter's keyring is.
	b.filterHome = filepath.Join(b.work, "gnupg-filter")
	if err := os.Mkdir(b.filterHome, 0o700); err != nil {
		return err
	}
	if out, err := b.run(time.Minute, "gpg", "--homedir", b.filterHome, "--batch", "--no-tty", "--import", pub); err != nil {
		return fmt.Errorf("gpg --import: %v\n%s", err, out)
	}

	// S/MIME: a CA and an RSA-2048 certificate for carol.
	o := func(args ...string) error {
		cmd := exec.CommandContext(b.ctx, "openssl", args...)
		cmd.Dir = keys
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("openssl %s: %v\n%s", args[0], err, out)
		}
		return nil
	}
	b.caPEM = filepath.Join(keys, "ca.pem")
	const addr = "carol@smime.bench.example"
	if err := o("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", b.caPEM, "-days", "30",
		"-subj", "/CN=sealgate bench CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"); err != nil {
		return err
	}
	if err := o("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "carol.key", "-out", "carol.csr", "-subj", "/CN=Carol/emailAddress="+addr); err != nil {
		return err
	}
	ext := "subjectAltName=email:" + addr + "\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nbasicConstraints=CA:FALSE\n"
	if err := os.WriteFile(filepath.Join(keys, "ext.cnf"), []byte(ext), 0o600); err != nil {
		return err
	}
	if err := o("x509", "-req", "-in", "carol.csr", "-CA", b.caPEM, "-CAkey", "ca.key", "-CAcreateserial", "-days", "30",
		"-extfile", "ext.cnf", "-out", "carol.pem"); err != nil {
		return err
	}
	b.keyFiles = append(b.keyFiles, filepath.Join(keys, "carol.pem"))
	b.dataDir = filepath.Join(b.work, "data")
	return nil
}

// fingerprint returns the primary key fingerprint of the key for who.
func fingerprint(gpg func(...string) ([]byte, error), who string) (string, error) {
	out, err := gpg("--with-colons", "--list-keys", who)
	if err != nil {
		return "", fmt.Errorf("gpg --list-keys %s: %v", who, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Split(l, ":"); f[0] == "fpr" && len(f) > 9 {
			return f[9], nil
		}
	}
	return "", errors.New("no fingerprint for " + who)
}

// writeConfig writes a gateway config relaying to upstream; it returns the
// file and the SMTP and HTTP listen addresses.
func (b *bench) writeConfig(name, upstream string) (file, smtpAddr, httpAddr string) {
	smtpAddr, httpAddr = freeAddr(), freeAddr()
	file = filepath.Join(b.work, name+".toml")
	text := fmt.Sprintf(`data_dir = %q

[smtp]
listen = %q
upstream = %q
upstream_tls = "none"
upstream_timeout = "2m"
max_connections = 2000
max_message_bytes = 67108864

[http]
listen = %q

[smime]
trust_roots = [%q]
revocation = "off"

[log]
level = "warn"

[[policy]]
match = "x25519.bench.example"
encrypt = "required"
format = "pgp"

[[policy]]
match = "rsa3072.bench.example"
encrypt = "required"
format = "pgp"

[[policy]]
match = "ten.bench.example"
encrypt = "required"
format = "pgp"

[[policy]]
match = "smime.bench.example"
encrypt = "required"
format = "smime"

[[policy]]
match = "*"
encrypt = "never"
`, b.dataDir, smtpAddr, upstream, httpAddr, b.caPEM)
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		fatalf("write config: %v", err)
	}
	return file, smtpAddr, httpAddr
}

// startTarget starts a fresh gateway (or the reference filter) relaying to
// upstream and waits for its greeting.
// With SEALGATE_BENCH_PROFILE_DIR set, a gateway started with a tag writes
// a CPU profile of its whole life to DIR/TAG.pprof.
func (b *bench) startTarget(sc scenario, upstream, tag string) (*child, string, error) {
	if sc.gpg {
		addr := freeAddr()
		c, err := b.start("gpgfilter", filepath.Join(b.bin, "gpgfilter"), nil,
			"-listen", addr, "-upstream", upstream, "-homedir", b.filterHome, "-key", b.gpgKey)
		if err != nil {
			return nil, "", err
		}
		return c, addr, c.waitGreeting(addr)
	}
	cfg, addr, _ := b.writeConfig("sealgate-"+sc.ID, upstream)
	var env []string
	if dir := os.Getenv("SEALGATE_BENCH_PROFILE_DIR"); dir != "" && tag != "" {
		env = append(env, "SEALGATE_CPUPROFILE="+filepath.Join(dir, tag+".pprof"))
	}
	c, err := b.start("sealgate", filepath.Join(b.bin, "sealgate"), env, "serve", "--config", cfg)
	if err != nil {
		return nil, "", err
	}
	return c, addr, c.waitGreeting(addr)
}

// verify sends one message per scenario through a gateway into a dumping
// smtp-sink and checks each copy has the form the scenario claims, so a
// figure never measures the wrong path.
func (b *bench) verify(scens []scenario) error {
	dump := filepath.Join(b.work, "dump")
	if err := os.Mkdir(dump, 0o777); err != nil {
		return err
	}
	_ = os.Chmod(dump, 0o777)
	addr := freeAddr()
	args := []string{"-d", dump + "/%Y%m%d%H%M%S.", addr, "64"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	sink, err := b.start("smtp-sink", "smtp-sink", nil, args...)
	if err != nil {
		return err
	}
	defer b.stop(sink)
	if err := sink.waitGreeting(addr); err != nil {
		return err
	}
	small := msgSize{Name: "verify", Bytes: 4096, Sessions: 1}
	for _, sc := range scens {
		before, _ := filepath.Glob(filepath.Join(dump, "*"))
		c, gaddr, err := b.startTarget(sc, addr, "")
		if err != nil {
			return fmt.Errorf("%s: %w", sc.ID, err)
		}
		_, err = b.load(gaddr, small, sc.Rcpts, "-c", "1", "-n", "1")
		b.stop(c)
		if err != nil {
			return fmt.Errorf("%s: %w\n%s", sc.ID, err, c.out.String())
		}
		var got []byte
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && got == nil; time.Sleep(50 * time.Millisecond) {
			after, _ := filepath.Glob(filepath.Join(dump, "*"))
			for _, f := range after {
				if !slices.Contains(before, f) {
					got, _ = os.ReadFile(f)
				}
			}
		}
		if got == nil {
			return fmt.Errorf("%s: nothing reached the sink", sc.ID)
		}
		want := map[string]string{"never": "Subject: sealgate benchmark", "smime-rsa2048": "application/pkcs7-mime; smime-type=enveloped-data"}[sc.ID]
		if want == "" {
			want = "-----BEGIN PGP MESSAGE-----"
		}
		// sealgate protects headers, so its encrypted copies show "Subject: ...".
		hidden := sc.ID == "never" || sc.gpg || !bytes.Contains(got, []byte("Subject: sealgate benchmark"))
		if !bytes.Contains(got, []byte(want)) || !hidden {
			return fmt.Errorf("%s: the upstream copy is not what the scenario claims (want %q, and no plaintext subject when encrypted):\n%.2000s", sc.ID, want, got)
		}
		if n := bytes.Count(got, []byte("X-Rcpt-Args:")); n != len(sc.Rcpts) {
			return fmt.Errorf("%s: upstream copy has %d recipients, want %d in one transaction", sc.ID, n, len(sc.Rcpts))
		}
	}
	return nil
}

// ---- measurements ----

// ceiling times smtp-source straight into smtp-sink: a short calibration
// run, then one sized to last about the throughput duration.
func (b *bench) ceiling(sz msgSize) (float64, error) {
	r, err := b.source(b.sinkAddr, sz, "plain@plain.bench.example", sz.Sessions*10)
	if err != nil {
		return 0, err
	}
	return b.source(b.sinkAddr, sz, "plain@plain.bench.example", int(r*b.thr.Seconds()))
}

// source times smtp-source sending about m messages to rcpt at addr
// (one connection per message, as without -d).
func (b *bench) source(addr string, sz msgSize, rcpt string, m int) (float64, error) {
	m = min(max(m, 2*sz.Sessions), 100000)
	start := time.Now()
	out, err := b.run(3*time.Minute, "smtp-source", "-s", strconv.Itoa(sz.Sessions), "-m", strconv.Itoa(m),
		"-l", strconv.Itoa(max(sz.Bytes-130, 100)), "-f", sender, "-t", rcpt, "-M", "bench.example", addr)
	if err != nil {
		return 0, fmt.Errorf("smtp-source: %v\n%s", err, out)
	}
	return float64(m) / time.Since(start).Seconds(), nil
}

// scenario measures one scenario at one size on a fresh process.
func (b *bench) scenario(sz msgSize, sc scenario) (r row) {
	r = row{Size: sz.Name, Scenario: sc.ID, Label: sc.Label}
	c, addr, err := b.startTarget(sc, b.sinkAddr, sz.Name+"-"+sc.ID)
	if err != nil {
		r.Failed = err.Error()
		if c != nil {
			b.stop(c)
		}
		return r
	}
	defer b.stop(c)
	sessions := strconv.Itoa(sz.Sessions)
	if _, err := b.load(addr, sz, sc.Rcpts, "-c", sessions, "-n", strconv.Itoa(sz.warm)); err != nil {
		r.Failed = "warm-up: " + err.Error()
		return r
	}
	cpu0, sink0 := c.cpuTicks(), b.sink.cpuTicks()
	thr, err := b.load(addr, sz, sc.Rcpts, "-c", sessions, "-d", b.thr.String(), "-min", strconv.Itoa(2*sz.Sessions))
	if err != nil {
		r.Failed = "throughput: " + err.Error()
		return r
	}
	cpu1, sink1 := c.cpuTicks(), b.sink.cpuTicks()
	r.Throughput = *thr
	r.CPUMSPerMsg = (cpu1 - cpu0) / b.clkTck * 1000 / float64(thr.Sent)
	r.SinkCPUMS = (sink1 - sink0) / b.clkTck * 1000 / float64(thr.Sent)
	// The same through the gateway with smtp-source as the client, so the
	// two headline ratios can also be read tool for tool.
	if sc.ID == "never" || sc.ID == "pgp-x25519" {
		if v, err := b.source(addr, sz, sc.Rcpts[0], int(thr.MsgsPerS*b.thr.Seconds())); err != nil {
			r.SourceErr = err.Error()
		} else {
			r.SourceMsgsPerS = v
		}
	}
	rate := fmt.Sprintf("%.3f", thr.MsgsPerS/2)
	lat := []string{"-c", sessions, "-rate", rate, "-d", b.lat.String(), "-min", strconv.Itoa(sz.minLat)}
	if r.Latency, err = b.load(addr, sz, sc.Rcpts, lat...); err != nil {
		r.Failed = "latency: " + err.Error()
		return r
	}
	r.PeakRSSMiB = c.peakRSSMiB()
	if r.Direct, err = b.load(b.sinkAddr, sz, sc.Rcpts, lat...); err != nil {
		r.Failed = "direct latency: " + err.Error()
	}
	return r
}

// bigMessage sends one message of n bytes through a fresh gateway.
func (b *bench) bigMessage(sc scenario, n int) (r bigResult) {
	r = bigResult{Scenario: sc.ID, Label: sc.Label, Bytes: n}
	c, addr, err := b.startTarget(sc, b.sinkAddr, "50MiB-"+sc.ID)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer b.stop(c)
	start := time.Now()
	if _, err := b.load(addr, msgSize{Name: "50MiB", Bytes: n, Sessions: 1}, sc.Rcpts, "-c", "1", "-n", "1"); err != nil {
		r.Error = err.Error()
	}
	r.Seconds = time.Since(start).Seconds()
	r.PeakRSSMiB = c.peakRSSMiB()
	return r
}

// load runs smtpload and parses its JSON; a run in which any message
// failed is an error (every figure counts only accepted messages).
func (b *bench) load(addr string, sz msgSize, rcpts []string, args ...string) (*loadResult, error) {
	args = append([]string{"-addr", addr, "-size", strconv.Itoa(sz.Bytes), "-from", sender, "-to", strings.Join(rcpts, ","), "-timeout", "3m"}, args...)
	ctx, cancel := context.WithTimeout(b.ctx, 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(b.bin, "smtpload"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var res loadResult
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil {
		return nil, fmt.Errorf("smtpload %v: %v %s %s", args, err, stdout.String(), stderr.String())
	}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			res.LoaderCPUMS = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
		}
	}
	if res.Failed > 0 || res.Sent == 0 {
		return &res, fmt.Errorf("%d of %d messages failed, first: %s", res.Failed, res.Failed+res.Sent, res.FirstErr)
	}
	return &res, nil
}

// ---- processes ----

type child struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 { // keep the first MiB
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs a long-lived process; killAll and stop end it. Its PID goes to
// WORK/pids so that run.sh can clean up even if this program is killed.
func (b *bench) start(name, path string, env []string, args ...string) (*child, error) {
	c := &child{name: name, cmd: exec.Command(path, args...), out: &syncBuffer{}, done: make(chan struct{})}
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.Env = append(append(os.Environ(), "SEALGATE_BENCH_RUN="+b.work), env...)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	b.mu.Lock()
	b.children[c] = true
	fmt.Fprintf(b.pidFile, "%d %s\n", c.cmd.Process.Pid, filepath.Base(path))
	b.mu.Unlock()
	return c, nil
}

// stop sends SIGTERM and, after 20 s, SIGKILL.
func (b *bench) stop(c *child) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	b.mu.Lock()
	delete(b.children, c)
	b.mu.Unlock()
}

func (b *bench) killAll() {
	b.mu.Lock()
	cs := make([]*child, 0, len(b.children))
	for c := range b.children {
		cs = append(cs, c)
	}
	b.mu.Unlock()
	for _, c := range cs {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range cs {
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			_ = c.cmd.Process.Kill()
		}
	}
}

// run runs a short command and returns its combined output.
func (b *bench) run(timeout time.Duration, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd.CombinedOutput()
}

func (c *child) waitGreeting(addr string) error {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-c.done:
			return fmt.Errorf("%s exited before answering on %s:\n%s", c.name, addr, c.out.String())
		default:
		}
		if nc, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(nc).ReadString('\n')
			_, _ = nc.Write([]byte("QUIT\r\n"))
			nc.Close()
			if strings.HasPrefix(line, "220") {
				return nil
			}
		}
	}
	return fmt.Errorf("%s never answered 220 on %s:\n%s", c.name, addr, c.out.String())
}

// cpuTicks is utime+stime of the process and of its waited-for children
// (the reference filter's gpg processes), in clock ticks.
func (c *child) cpuTicks() float64 {
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		return math.NaN()
	}
	s := string(f)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// fields[0] is field 3 (state): utime..cstime are fields 14..17.
	var sum float64
	for _, i := range []int{11, 12, 13, 14} {
		v, _ := strconv.ParseFloat(fields[i], 64)
		sum += v
	}
	return sum
}

// peakRSSMiB is VmHWM, the process's peak resident set.
func (c *child) peakRSSMiB() float64 {
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return math.NaN()
	}
	for _, l := range strings.Split(string(f), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return math.NaN()
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("no free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}
