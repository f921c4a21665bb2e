package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// pairedRounds is how many times the paired measurement takes each of its
// three figures.
const pairedRounds = 5

// paired holds one size's interleaved measurement of the two headline
// ratios (see pairedRun).
type paired struct {
	Size    string    `json:"size"`
	Seconds float64   `json:"seconds"` // per window
	Ceiling []float64 `json:"ceiling_msgs_per_s"`
	Never   []float64 `json:"never_msgs_per_s"`
	PGP     []float64 `json:"pgp_x25519_msgs_per_s"`
	Failed  string    `json:"failed,omitempty"`
}

// ratios returns, per round, PGP ÷ ceiling and PGP ÷ passthrough.
func (p *paired) ratios() (ofCeiling, ofNever []float64) {
	for i := range p.PGP {
		ofCeiling = append(ofCeiling, p.PGP[i]/p.Ceiling[i])
		ofNever = append(ofNever, p.PGP[i]/p.Never[i])
	}
	return ofCeiling, ofNever
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pairedRun measures the headline figures of one size close together, so
// that the machine's drift (on a shared VM the same measurement moves 10–20%
// from one minute to the next) falls on all three alike: a passthrough
// gateway and a PGP x25519 gateway run side by side, and each round takes
// the ceiling (smtp-source → smtp-sink), passthrough and PGP one after the
// other, in an order that rotates from round to round. Each ratio is taken
// within a round; the report gives the median of the rounds.
func (b *bench) pairedRun(sz msgSize, ceilingRate float64) (p paired) {
	p = paired{Size: sz.Name, Seconds: b.thr.Seconds() / 2}
	window := b.thr / 2
	never, pgp := scenarios[0], scenarios[1]
	type target struct {
		sc   scenario
		addr string
	}
	var ts []target
	for _, sc := range []scenario{never, pgp} {
		c, addr, err := b.startTarget(sc, b.sinkAddr, "")
		if err != nil {
			p.Failed = fmt.Sprintf("start %s: %v", sc.ID, err)
			if c != nil {
				b.stop(c)
			}
			return p
		}
		defer b.stop(c)
		if _, err := b.load(addr, sz, sc.Rcpts, "-c", strconv.Itoa(sz.Sessions), "-n", strconv.Itoa(sz.warm)); err != nil {
			p.Failed = fmt.Sprintf("warm-up %s: %v", sc.ID, err)
			return p
		}
		ts = append(ts, target{sc, addr})
	}
	// The ceiling window: smtp-source sends as many messages as it sends
	// in about one window at the last measured rate (at first the size's
	// ceiling measured before its scenarios).
	for round := range pairedRounds {
		figs := map[string]float64{}
		for k := range 3 {
			switch (round + k) % 3 {
			case 0:
				v, err := b.source(b.sinkAddr, sz, "plain@plain.bench.example", int(ceilingRate*window.Seconds()))
				if err != nil {
					p.Failed = "ceiling: " + err.Error()
					return p
				}
				ceilingRate, figs["ceiling"] = v, v
			default:
				t := ts[(round+k)%3-1]
				r, err := b.load(t.addr, sz, t.sc.Rcpts, "-c", strconv.Itoa(sz.Sessions), "-d", window.String(), "-min", strconv.Itoa(2*sz.Sessions))
				if err != nil {
					p.Failed = t.sc.ID + ": " + err.Error()
					return p
				}
				figs[t.sc.ID] = r.MsgsPerS
			}
			if b.ctx.Err() != nil {
				p.Failed = b.ctx.Err().Error()
				return p
			}
		}
		p.Ceiling = append(p.Ceiling, figs["ceiling"])
		p.Never = append(p.Never, figs[never.ID])
		p.PGP = append(p.PGP, figs[pgp.ID])
	}
	return p
}

// pairedTable is the paired measurement's section of results.md.
func pairedTable(rep *report) string {
	if len(rep.Paired) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## Headline ratios, interleaved\n\n"+
		"The ratios of the main table compare figures taken up to minutes apart. Here a passthrough and a PGP x25519 "+
		"gateway run side by side, and each of %d rounds measures the ceiling (smtp-source → smtp-sink), passthrough and "+
		"PGP one after the other (%.0f s each, the order rotating); each ratio is taken within its round. Medians, with "+
		"the range of the rounds.\n\n", pairedRounds, rep.Paired[0].Seconds)
	b.WriteString("| size | ceiling msg/s | passthrough msg/s | PGP x25519 msg/s | PGP × ceiling | PGP × passthrough |\n|---|--:|--:|--:|--:|--:|\n")
	for _, p := range rep.Paired {
		if p.Failed != "" {
			fmt.Fprintf(&b, "| %s | failed: %s | | | | |\n", sizeLabel(p.Size), mdEscape(firstLine(p.Failed)))
			continue
		}
		oc, on := p.ratios()
		span := func(v []float64) string {
			return fmt.Sprintf("%.2f (%.2f–%.2f)", median(v), slices.Min(v), slices.Max(v))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", sizeLabel(p.Size), rate(median(p.Ceiling)), rate(median(p.Never)),
			rate(median(p.PGP)), span(oc), span(on))
	}
	b.WriteString("\n")
	return b.String()
}
