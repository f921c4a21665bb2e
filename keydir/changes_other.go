//go:build !unix

package keydir

import "errors"

// changeCounter needs shared memory (changes_unix.go); elsewhere every
// lookup reads the generation from the database.
type changeCounter struct{}

func openChangeCounter(string) (*changeCounter, error) {
	return nil, errors.New("keydir: no shared change counter on this system")
}

func (c *changeCounter) load() uint64 { return 0 }
func (c *changeCounter) bump()        {}
