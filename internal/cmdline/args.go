// Package cmdline holds what the sealgate and sealmail commands share.
package cmdline

import (
	"flag"
	"fmt"
	"io"
)

// ParseArgs parses flags that may stand before, between or after the
// positional arguments ("keys import a.asc --config x.toml") and returns
// the positional ones. A "--" is consumed by the flag package like any
// other end of flags.
func ParseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%s: %w", fs.Name(), err)
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
