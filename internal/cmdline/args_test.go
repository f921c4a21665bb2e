package cmdline

import (
	"flag"
	"slices"
	"testing"
)

func TestParseArgsInterleaved(t *testing.T) {
	fs := flag.NewFlagSet("keys import", flag.ContinueOnError)
	cfg := fs.String("config", "", "")
	pos, err := ParseArgs(fs, []string{"a.asc", "--config", "x.toml", "b.asc"})
	if err != nil || *cfg != "x.toml" || !slices.Equal(pos, []string{"a.asc", "b.asc"}) {
		t.Fatalf("pos %v config %q err %v", pos, *cfg, err)
	}
	if _, err := ParseArgs(flag.NewFlagSet("x", flag.ContinueOnError), []string{"--nope"}); err == nil {
		t.Fatal("unknown flag accepted")
	}
}
