package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/sealgate/sealgate/config"
)

func cmdConfigCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	file := fs.String("config", "", "config file to check")
	if _, err := parseArgs(fs, args); err != nil || *file == "" {
		return errUsage
	}
	if _, err := config.Load(*file); err != nil {
		fmt.Fprintln(stderr, err)
		return exitError(1)
	}
	fmt.Fprintf(stdout, "%s: OK\n", *file)
	return nil
}

// loadConfig returns the file's configuration, or the built-in defaults
// when path is empty.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		cfg := config.Default()
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		return cfg, nil
	}
	return config.Load(path)
}
