package keydir

import (
	"context"
	"errors"
	"time"
)

// ErrUnauthorized is returned for an unknown or revoked admin token.
var ErrUnauthorized = errors.New("keydir: unknown or revoked token")

// Scope is what an admin API token may do.
type Scope string

const (
	ScopeRead  Scope = "read"  // list, show, history
	ScopeWrite Scope = "write" // read, plus import, remove, revoke
)

// Token is an admin API credential. Only a hash of its secret is stored.
type Token struct {
	ID      string // public identifier, shown in lists and history
	Name    string // what the admin called it
	Scope   Scope
	Created time.Time
	Revoked time.Time // zero while active
}

// Event is one recorded change to the directory.
type Event struct {
	Time        time.Time
	Actor       string // "cli:USER", "token:ID", …
	Action      string // "import", "update", "remove", "revoke"
	Fingerprint string
	// Addresses are the key's addresses after the change (import, update,
	// revoke) or before it (remove).
	Addresses []string
}

// The actions the store records.
const (
	ActionImport = "import" // Put of a new fingerprint
	ActionUpdate = "update" // Put of a fingerprint already stored
	ActionRemove = "remove" // Remove, or RemoveAddress for each key it deletes
	ActionRevoke = "revoke" // Put with WithAction(ctx, ActionRevoke)
)

// Admin is the part of the store the admin API and CLI need beyond keys.
type Admin interface {
	// CreateToken makes a token and returns its secret, shown once.
	CreateToken(ctx context.Context, name string, scope Scope) (secret string, tok Token, err error)
	// AuthenticateToken returns the active token whose secret this is, or
	// ErrUnauthorized. The comparison is constant-time.
	AuthenticateToken(ctx context.Context, secret string) (Token, error)
	ListTokens(ctx context.Context) ([]Token, error)
	RevokeToken(ctx context.Context, id string) error
	// History returns the recorded changes for a normalised address, oldest first.
	History(ctx context.Context, address string) ([]Event, error)
	// LookupKeyID returns keys whose primary key ID (16 upper-case hex) matches.
	LookupKeyID(ctx context.Context, keyID string) ([]Key, error)
	// LookupWKD returns the keys with an address in domain whose local
	// part has WKD hash hash (keydir/wkd.Hash of the normalised local part),
	// with those addresses. It is an indexed query: the store keeps the hash
	// and the domain of every address (key_addresses columns filled by Put,
	// backfilled by the migration that adds them).
	LookupWKD(ctx context.Context, domain, hash string) ([]Key, error)
}

type actorKey struct{}

// WithActor names who makes the changes done with ctx; the store records
// it with every change (Put, Remove, RemoveAddress) in the same transaction.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

type actionKey struct{}

// WithAction overrides the action the store records for a Put done with
// ctx (normally "import" or "update"): the admin API stores a revoked
// certificate with WithAction(ctx, ActionRevoke), so the change is
// recorded as a revocation in the same transaction. Remove and
// RemoveAddress always record "remove".
func WithAction(ctx context.Context, action string) context.Context {
	return context.WithValue(ctx, actionKey{}, action)
}

// actionFrom returns the action set by WithAction, or def.
func actionFrom(ctx context.Context, def string) string {
	if a, ok := ctx.Value(actionKey{}).(string); ok && a != "" {
		return a
	}
	return def
}

// ActorFrom returns the actor set by WithActor, or "unknown".
func ActorFrom(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return "unknown"
}
