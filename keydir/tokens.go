package keydir

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// TokenPrefix starts every token secret, so that a leaked one is easy to
// recognise (and to search for in logs and repositories).
const TokenPrefix = "sgt_"

// maxTokenName bounds a token's name, which lists print.
const maxTokenName = 100

// tokenSecretEncoding writes the 32 random bytes of a secret: lower-case
// base32 without padding, 52 characters.
var tokenSecretEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// hashTokenSecret is what the store keeps of a secret. The secret holds
// 256 random bits, so a fast unsalted hash is enough: there is nothing to
// guess.
func hashTokenSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// CreateToken makes a token called name with scope and returns its secret
// (TokenPrefix + 52 base32 characters), which is not stored and cannot be
// shown again. The ID is 8 random hex digits.
func (s *SQLStore) CreateToken(ctx context.Context, name string, scope Scope) (string, Token, error) {
	name = strings.TrimSpace(name)
	if err := checkTokenName(name); err != nil {
		return "", Token{}, err
	}
	if scope != ScopeRead && scope != ScopeWrite {
		return "", Token{}, fmt.Errorf("keydir: create token: scope %q: want %q or %q", scope, ScopeRead, ScopeWrite)
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw) // crypto/rand.Read never fails
	secret := TokenPrefix + tokenSecretEncoding.EncodeToString(raw)
	tok := Token{Name: name, Scope: scope, Created: dbTime(time.Now())}
	const insert = `INSERT INTO tokens (id, name, scope, secret_hash, created_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	// 32 bits of ID collide rarely; try again with a new one when they do.
	for range 5 {
		id := make([]byte, 4)
		_, _ = rand.Read(id)
		tok.ID = hex.EncodeToString(id)
		res, err := s.db.ExecContext(ctx, s.d.rebind(insert), tok.ID, tok.Name, string(tok.Scope),
			hashTokenSecret(secret), tok.Created)
		if err != nil {
			return "", Token{}, fmt.Errorf("keydir: create token: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return "", Token{}, fmt.Errorf("keydir: create token: %w", err)
		} else if n == 1 {
			return secret, tok, nil
		}
	}
	return "", Token{}, errors.New("keydir: create token: no free token ID found")
}

func checkTokenName(name string) error {
	if name == "" {
		return errors.New("keydir: create token: empty name")
	}
	if len(name) > maxTokenName {
		return fmt.Errorf("keydir: create token: name longer than %d bytes", maxTokenName)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("keydir: create token: name %q has a control or invisible character", name)
		}
	}
	return nil
}

// AuthenticateToken returns the active token whose secret this is (spaces
// around it ignored), or ErrUnauthorized. The database finds the row by
// the SHA-256 of the secret, so it only ever compares hashes; the hash is
// then compared again in constant time, which does not depend on how the
// database compares.
func (s *SQLStore) AuthenticateToken(ctx context.Context, secret string) (Token, error) {
	secret = strings.TrimSpace(secret)
	if !strings.HasPrefix(secret, TokenPrefix) {
		return Token{}, ErrUnauthorized
	}
	want := hashTokenSecret(secret)
	const query = `SELECT id, name, scope, created_at, revoked_at, secret_hash FROM tokens WHERE secret_hash = ?`
	var stored []byte
	tok, err := scanToken(s.db.QueryRowContext(ctx, s.d.rebind(query), want), &stored)
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, ErrUnauthorized
	}
	if err != nil {
		return Token{}, fmt.Errorf("keydir: authenticate token: %w", err)
	}
	if subtle.ConstantTimeCompare(stored, want) != 1 || !tok.Revoked.IsZero() {
		return Token{}, ErrUnauthorized
	}
	return tok, nil
}

// ListTokens returns every token, revoked ones included, oldest first.
func (s *SQLStore) ListTokens(ctx context.Context) (toks []Token, err error) {
	const query = `SELECT id, name, scope, created_at, revoked_at FROM tokens ORDER BY created_at, id`
	rows, err := s.db.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("keydir: list tokens: %w", err)
	}
	defer func() { err = errors.Join(err, rows.Close()) }()
	toks = []Token{}
	for rows.Next() {
		tok, err := scanToken(rows, nil)
		if err != nil {
			return nil, fmt.Errorf("keydir: list tokens: %w", err)
		}
		toks = append(toks, tok)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keydir: list tokens: %w", err)
	}
	return toks, nil
}

// scanToken reads id, name, scope, created_at, revoked_at and, when hash
// is not nil, secret_hash into it.
func scanToken(row interface{ Scan(...any) error }, hash *[]byte) (Token, error) {
	var tok Token
	var scope string
	var revoked sql.NullTime
	dest := []any{&tok.ID, &tok.Name, &scope, &tok.Created, &revoked}
	if hash != nil {
		dest = append(dest, hash)
	}
	if err := row.Scan(dest...); err != nil {
		return Token{}, err
	}
	tok.Scope, tok.Created = Scope(scope), tok.Created.UTC()
	if revoked.Valid {
		tok.Revoked = revoked.Time.UTC()
	}
	return tok, nil
}

// RevokeToken revokes the token with id at once: AuthenticateToken refuses
// it from then on, on every node sharing the database. Revoking a revoked
// token succeeds and keeps the first revocation time; an unknown id gives
// ErrNotFound.
func (s *SQLStore) RevokeToken(ctx context.Context, id string) error {
	const update = `UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`
	res, err := s.db.ExecContext(ctx, s.d.rebind(update), dbTime(time.Now()), id)
	if err != nil {
		return fmt.Errorf("keydir: revoke token %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("keydir: revoke token %s: %w", id, err)
	} else if n == 1 {
		return nil
	}
	var found string
	err = s.db.QueryRowContext(ctx, s.d.rebind(`SELECT id FROM tokens WHERE id = ?`), id).Scan(&found)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("keydir: revoke token %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("keydir: revoke token %s: %w", id, err)
	}
	return nil
}
