// Package keydir is sealgate's key directory: address normalisation, the
// store of published public keys (SQLite by default, PostgreSQL for several
// gateway nodes), key import with validation, admin tokens and the history
// of changes.
package keydir

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when a key or address is not in the directory.
var ErrNotFound = errors.New("keydir: not found")

// Kind tells which standard a key belongs to.
type Kind string

const (
	KindPGP  Kind = "pgp"
	KindX509 Kind = "x509"
)

// Key is one published public key with the addresses it is indexed under.
type Key struct {
	Fingerprint string   // upper-case hex
	Kind        Kind     // KindPGP or KindX509
	Data        []byte   // binary public certificate
	Addresses   []string // normalised (see NormalizeAddress)
	Created     time.Time
	Updated     time.Time
}

// Store is the persistent directory. Every change (Put, Remove,
// RemoveAddress) is recorded as an Event in the same transaction, with the
// actor named by WithActor.
type Store interface {
	Admin
	AuditTrail
	// Put inserts or replaces the key with key.Fingerprint and its address index.
	Put(ctx context.Context, key Key) error
	// Get returns the key with fingerprint fpr or ErrNotFound.
	Get(ctx context.Context, fpr string) (Key, error)
	// Lookup returns every key indexed under the normalised address (an empty slice when none).
	Lookup(ctx context.Context, address string) ([]Key, error)
	// List returns all keys ordered by fingerprint.
	List(ctx context.Context) ([]Key, error)
	// Remove deletes the key with fingerprint fpr or returns ErrNotFound.
	Remove(ctx context.Context, fpr string) error
	// RemoveAddress deletes every key indexed under the normalised address
	// and returns their fingerprints (sorted), or ErrNotFound when there is none.
	RemoveAddress(ctx context.Context, address string) ([]string, error)
	Close() error
}
