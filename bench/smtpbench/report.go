package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// write saves results.json, results.md and throughput.png in b.out.
func (b *bench) write(rep *report) error {
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.out, "results.json"), append(raw, '\n'), 0o644); err != nil {
		return err
	}
	chartErr := b.chart(rep)
	if chartErr != nil {
		rep.Notes = append(rep.Notes, "chart not drawn: "+chartErr.Error())
	}
	if err := os.WriteFile(filepath.Join(b.out, "results.md"), []byte(markdown(rep, chartErr == nil)), 0o644); err != nil {
		return err
	}
	logf("results in %s", b.out)
	return nil
}

func (r *report) rowFor(size, id string) *row {
	for i := range r.Rows {
		if r.Rows[i].Size == size && r.Rows[i].Scenario == id && r.Rows[i].Failed == "" {
			return &r.Rows[i]
		}
	}
	return nil
}

// sizeLabel turns "4KiB" into "4 KiB".
func sizeLabel(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	return s[:i] + " " + s[i:]
}

// Table is the main results table; bench/README.md embeds a copy.
func Table(rep *report) string {
	var b strings.Builder
	b.WriteString("| size | path | msg/s | MB/s | × ceiling | × gpg filter | × passthrough | p50 added ms | p99 added ms | CPU ms/msg | peak RSS MiB |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, sz := range rep.Sizes {
		ceil := rep.Ceiling[sz.Name]
		gpg, never := rep.rowFor(sz.Name, "gpg-filter"), rep.rowFor(sz.Name, "never")
		fmt.Fprintf(&b, "| %s | smtp-source → smtp-sink (ceiling) | %s | %s | 1.00 | %s | | | | | |\n", sizeLabel(sz.Name), rate(ceil),
			num(ceil*float64(sz.Bytes)/1e6), ratio(ceil, gpg))
		for _, r := range rep.Rows {
			if r.Size != sz.Name {
				continue
			}
			if r.Failed != "" {
				fmt.Fprintf(&b, "| %s | %s | failed: %s | | | | | | | | |\n", sizeLabel(sz.Name), r.Label, mdEscape(firstLine(r.Failed)))
				continue
			}
			t := r.Throughput
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |", sizeLabel(sz.Name), r.Label, rate(t.MsgsPerS), num(t.MBPerS),
				fmt.Sprintf("%.2f", t.MsgsPerS/ceil), ratio(t.MsgsPerS, gpg), ratio(t.MsgsPerS, never))
			if r.Latency != nil && r.Direct != nil {
				fmt.Fprintf(&b, " %s | %s |", ms(r.Latency.P50MS-r.Direct.P50MS), ms(r.Latency.P99MS-r.Direct.P99MS))
			} else {
				b.WriteString(" | |")
			}
			if r.Scenario == "direct" {
				b.WriteString(" | |\n")
			} else {
				fmt.Fprintf(&b, " %s | %s |\n", cpu(r.CPUMSPerMsg), rss(r.PeakRSSMiB, r.Scenario))
			}
			if v := r.SourceMsgsPerS; v > 0 {
				pass := ""
				if never != nil && never.SourceMsgsPerS > 0 {
					pass = ratio(v, &row{Throughput: loadResult{MsgsPerS: never.SourceMsgsPerS}})
				}
				fmt.Fprintf(&b, "| %s | %s, smtp-source as client | %s | %s | %.2f | %s | %s | | | | |\n", sizeLabel(sz.Name), r.Label,
					rate(v), num(v*float64(sz.Bytes)/1e6), v/ceil, ratio(v, gpg), pass)
			} else if r.SourceErr != "" {
				fmt.Fprintf(&b, "| %s | %s, smtp-source as client | failed: %s | | | | | | | | |\n", sizeLabel(sz.Name), r.Label, mdEscape(firstLine(r.SourceErr)))
			}
		}
	}
	b.WriteString("\n¹ the filter process alone, without the gpg process each message runs.\n")
	return b.String()
}

func markdown(rep *report, chart bool) string {
	var b strings.Builder
	env := rep.Env
	fmt.Fprintf(&b, "# sealgate SMTP benchmark: %s, host %s (%s run)\n\n", rep.Started.Format("2006-01-02 15:04 MST"), env["host"], rep.Mode)
	fmt.Fprintf(&b, "`bench/run.sh%s` · commit %s · %s · %s CPUs (%s) · %s · %s · load average at start %s · %.0f s in all.\n\n",
		map[string]string{"quick": " --quick"}[rep.Mode], env["commit"], env["go"], env["cpus"], env["cpu"], env["kernel"], env["gpg"],
		env["loadavg_at_start"], rep.Finished.Sub(rep.Started).Seconds())
	var load, cpus float64
	fmt.Sscan(env["loadavg_at_start"], &load)
	fmt.Sscan(env["cpus"], &cpus)
	if cpus > 0 && load > cpus/2 {
		fmt.Fprintf(&b, "The machine was not idle when this run started (load average %.2f on %.0f CPUs).\n\n", load, cpus)
	}
	b.WriteString("**A shared, noisy machine.** The load generator, the gateway (or filter) and smtp-sink all run on these " +
		env["cpus"] + " cores, so every figure is a lower bound and differences under about 10% between runs are noise. " +
		"Compare figures from one run only.\n\n")
	var sess []string
	for _, s := range rep.Sizes {
		sess = append(sess, fmt.Sprintf("%d at %s", s.Sessions, sizeLabel(s.Name)))
	}
	fmt.Fprintf(&b, "Throughput: closed loop for %.0f s (sessions: %s; one connection per message, as smtp-source sends them). "+
		"Latency: open loop at half that throughput for %.1f s (or until enough samples), minus the direct path at the same rate. "+
		"See [bench/README.md](../../README.md) for what each column means.\n\n", rep.ThrSecs, strings.Join(sess, ", "), rep.LatSecs)
	b.WriteString(ceilingRuns(rep))
	b.WriteString(Table(rep))
	b.WriteString("\n")
	b.WriteString(pairedTable(rep))
	if chart {
		b.WriteString("![throughput by size and format](throughput.png)\n\n")
	}
	if len(rep.Big) > 0 {
		b.WriteString("## One 50 MiB message (fresh gateway, one session)\n\n| path | seconds | peak RSS MiB |\n|---|--:|--:|\n")
		for _, r := range rep.Big {
			if r.Error != "" {
				fmt.Fprintf(&b, "| %s | failed: %s | %s |\n", r.Label, mdEscape(firstLine(r.Error)), num(r.PeakRSSMiB))
				continue
			}
			fmt.Fprintf(&b, "| %s | %.2f | %s |\n", r.Label, r.Seconds, num(r.PeakRSSMiB))
		}
		b.WriteString("\n")
	}
	b.WriteString(costSplit(rep))
	b.WriteString("## Latency and CPU details\n\n")
	b.WriteString("DATA command to final 250, in ms. *Half load*: open loop at the rate shown; *direct*: the same rate straight into " +
		"smtp-sink; *saturated*: during the closed-loop throughput run (mostly queueing). *Late*: messages the loader started over 10 ms " +
		"after their slot. Loader and sink CPU are per message of the throughput run.\n\n")
	b.WriteString("| size | path | half-load rate msg/s | late | p50 / p99 | direct p50 / p99 | saturated p50 / p99 | loader CPU ms/msg | sink CPU ms/msg |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rep.Rows {
		if r.Failed != "" {
			continue
		}
		t := r.Throughput
		lcpu := t.LoaderCPUMS / float64(max(t.Sent, 1))
		if r.Latency == nil || r.Direct == nil {
			fmt.Fprintf(&b, "| %s | %s | | | | | %s / %s | %s | |\n", sizeLabel(r.Size), r.Label, ms(t.P50MS), ms(t.P99MS), cpu(lcpu))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %s / %s | %s / %s | %s / %s | %s | %s |\n", sizeLabel(r.Size), r.Label, rate(r.Latency.Rate),
			r.Latency.Behind, ms(r.Latency.P50MS), ms(r.Latency.P99MS), ms(r.Direct.P50MS), ms(r.Direct.P99MS), ms(t.P50MS), ms(t.P99MS),
			cpu(lcpu), cpu(r.SinkCPUMS))
	}
	b.WriteString("\n")
	for _, n := range rep.Notes {
		b.WriteString("- " + n + "\n")
	}
	b.WriteString("Raw figures: [results.json](results.json).\n")
	return b.String()
}

// chart draws msg/s and MB/s by size and path with gnuplot.
func (b *bench) chart(rep *report) error {
	if _, err := exec.LookPath("gnuplot"); err != nil {
		return fmt.Errorf("gnuplot is not installed")
	}
	type series struct{ id, title, color string }
	ss := []series{{"ceiling", "smtp-source → smtp-sink (ceiling)", "#555555"}, {"direct", "smtpload → smtp-sink", "#aaaaaa"}}
	colors := map[string]string{"never": "#1f77b4", "pgp-x25519": "#2ca02c", "pgp-rsa3072": "#ff7f0e", "smime-rsa2048": "#9467bd",
		"pgp-x25519-10rcpt": "#17becf", "gpg-filter": "#d62728"}
	for _, sc := range scenarios {
		for _, r := range rep.Rows {
			if r.Scenario == sc.ID {
				ss = append(ss, series{sc.ID, sc.Label, colors[sc.ID]})
				break
			}
		}
	}
	var msgs, mbs strings.Builder
	for _, w := range []*strings.Builder{&msgs, &mbs} {
		w.WriteString("size")
		for _, s := range ss {
			fmt.Fprintf(w, " %q", s.title)
		}
		w.WriteString("\n")
	}
	for _, sz := range rep.Sizes {
		fmt.Fprintf(&msgs, "%q", sizeLabel(sz.Name))
		fmt.Fprintf(&mbs, "%q", sizeLabel(sz.Name))
		for _, s := range ss {
			v := math.NaN()
			if s.id == "ceiling" {
				v = rep.Ceiling[sz.Name]
			} else if r := rep.rowFor(sz.Name, s.id); r != nil {
				v = r.Throughput.MsgsPerS
			}
			if math.IsNaN(v) || v <= 0 {
				msgs.WriteString(" ?")
				mbs.WriteString(" ?")
				continue
			}
			fmt.Fprintf(&msgs, " %.3f", v)
			fmt.Fprintf(&mbs, " %.3f", v*float64(sz.Bytes)/1e6)
		}
		msgs.WriteString("\n")
		mbs.WriteString("\n")
	}
	dm, db := filepath.Join(b.work, "msgs.dat"), filepath.Join(b.work, "mbs.dat")
	if err := os.WriteFile(dm, []byte(msgs.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(db, []byte(mbs.String()), 0o644); err != nil {
		return err
	}
	var cols []string
	for _, s := range ss {
		cols = append(cols, s.color)
	}
	n := len(ss) + 1
	script := fmt.Sprintf(`set terminal pngcairo size 1500,640 font "sans,10"
set output %q
set datafile missing "?"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.95
set logscale y
set grid ytics mytics
set format y "%%.0f"
set yrange [0.5:*]
set bmargin 7
set xrange [-0.6:%d-0.4]
colors = %q
set multiplot layout 1,2 title %q
set title "messages per second"
set ylabel "msg/s (log scale)"
set key at screen 0.5, 0.015 center bottom horizontal maxcols 4 samplen 2 font "sans,10"
plot for [i=2:%d] %q using i:xtic(1) title columnheader(i) lc rgb word(colors, i-1)
set title "MB per second (input message bytes)"
set ylabel "MB/s (log scale)"
set yrange [0.05:*]
set format y "%%g"
unset key
plot for [i=2:%d] %q using i:xtic(1) title columnheader(i) lc rgb word(colors, i-1)
unset multiplot
`, filepath.Join(b.out, "throughput.png"), len(rep.Sizes), strings.Join(cols, " "),
		fmt.Sprintf("sealgate SMTP throughput by size and format: %s, %s, %s run (loopback; loader, gateway and sink share %s cores)",
			rep.Started.Format("2006-01-02"), rep.Env["host"], rep.Mode, rep.Env["cpus"]), n, dm, n, db)
	gp := filepath.Join(b.work, "chart.gp")
	if err := os.WriteFile(gp, []byte(script), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("gnuplot", gp).CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %v: %s", err, out)
	}
	return nil
}

func ratio(v float64, ref *row) string {
	if ref == nil || ref.Throughput.MsgsPerS <= 0 {
		return ""
	}
	r := v / ref.Throughput.MsgsPerS
	if r >= 10 {
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.2f", r)
}

// rate formats messages/s with thousands separators.
func rate(v float64) string {
	if math.IsNaN(v) || v <= 0 {
		return ""
	}
	if v < 100 {
		return fmt.Sprintf("%.1f", v)
	}
	s := fmt.Sprintf("%.0f", v)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func num(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func ms(v float64) string {
	if math.Abs(v) >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	if math.Abs(v) >= 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func cpu(v float64) string {
	if math.IsNaN(v) || v <= 0 {
		return ""
	}
	if v >= 10 {
		return fmt.Sprintf("%.0f", v)
	}
	if v >= 0.1 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// signedCPU is cpu for a difference, which may be negative.
func signedCPU(v float64) string {
	if v < 0 {
		return "−" + cpu(-v)
	}
	return cpu(v)
}

func rss(v float64, id string) string {
	if id == "gpg-filter" {
		return num(v) + " ¹"
	}
	return num(v)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

// ceilingRuns says what each size's ceiling is the mean of.
func ceilingRuns(rep *report) string {
	var parts []string
	for _, sz := range rep.Sizes {
		if runs := rep.CeilingRuns[sz.Name]; len(runs) == 2 {
			parts = append(parts, fmt.Sprintf("%s %s before the scenarios and %s after", sizeLabel(sz.Name), rate(runs[0]), rate(runs[1])))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "The ceiling (smtp-source → smtp-sink, msg/s) is measured twice per size, and the ratios use the mean: " +
		strings.Join(parts, "; ") + ".\n\n"
}

// costSplit says, per size, where PGP x25519's extra cost over
// passthrough goes: CPU time per message of the gateway, the sink and the
// loader, and the rest of the machine time a message takes when the
// machine is saturated (CPUs divided by msg/s: the kernel's network work
// outside process context, and idle time). Its last column is how much
// extra machine time per message a ratio of 0.85 × passthrough allows.
func costSplit(rep *report) string {
	var cpus float64
	fmt.Sscan(rep.Env["cpus"], &cpus)
	if cpus <= 0 {
		return ""
	}
	type split struct{ machine, gateway, sink, loader float64 }
	of := func(r *row) split {
		t := r.Throughput
		return split{cpus * 1000 / t.MsgsPerS, r.CPUMSPerMsg, r.SinkCPUMS, t.LoaderCPUMS / float64(max(t.Sent, 1))}
	}
	var b strings.Builder
	for _, sz := range rep.Sizes {
		never, pgp := rep.rowFor(sz.Name, "never"), rep.rowFor(sz.Name, "pgp-x25519")
		if never == nil || pgp == nil || never.Failed != "" || pgp.Failed != "" || never.Throughput.MsgsPerS <= 0 || pgp.Throughput.MsgsPerS <= 0 {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("## Where encrypting's cost goes (PGP/MIME x25519 against passthrough)\n\n" +
				"Per message of the throughput runs, in CPU ms. *Machine*: the CPUs' time per message at saturation (" +
				rep.Env["cpus"] + " CPUs ÷ msg/s); *rest*: machine time no measured process used (the kernel's network work " +
				"outside process context, idle moments). *Allowed for 0.85*: the extra machine time per message with which " +
				"PGP would still reach 0.85 × passthrough.\n\n" +
				"| size | path | machine | gateway | sink | loader | rest |\n|---|---|--:|--:|--:|--:|--:|\n")
		}
		n, p := of(never), of(pgp)
		line := func(label string, s split) {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", sizeLabel(sz.Name), label, signedCPU(s.machine), signedCPU(s.gateway),
				signedCPU(s.sink), signedCPU(s.loader), signedCPU(s.machine-s.gateway-s.sink-s.loader))
		}
		line(never.Label, n)
		line(pgp.Label, p)
		line("**extra for PGP**", split{p.machine - n.machine, p.gateway - n.gateway, p.sink - n.sink, p.loader - n.loader})
		fmt.Fprintf(&b, "| %s | allowed for 0.85 × passthrough | %s | | | | |\n", sizeLabel(sz.Name), cpu(n.machine/0.85-n.machine))
	}
	if b.Len() > 0 {
		b.WriteString("\n")
	}
	return b.String()
}
