package main

import (
	"fmt"
	"io"

	"github.com/sealgate/sealgate/keydir/wkd"
)

func cmdWKDHash(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errUsage
	}
	u, err := wkd.ForAddress(args[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\nadvanced: %s\ndirect:   %s\n", u.Hash, u.Advanced, u.Direct)
	return nil
}
