// Package depcheck holds no code: its tests guard sealgate's dependencies.
// They fail the build if anything imports the deprecated, unmaintained
// golang.org/x/crypto/openpgp (GO-2026-5932; use
// github.com/ProtonMail/go-crypto), if go.mod drops below the releases that
// carry the parser fixes listed in SECURITY.md, or if one of those fixes
// stops holding (regression tests named after each advisory).
package depcheck
