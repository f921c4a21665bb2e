package httpd

import (
	"sync"
	"time"

	"github.com/sealgate/sealgate/keydir"
)

// candidateCache keeps the reduced WKD form of stored keys: parsing a
// certificate, checking its signatures and re-serialising it costs far
// more than the store lookup that precedes it. An entry is keyed by the
// key's fingerprint and the time the store last changed it, so an update
// through any node misses the cache at once; usable (expiry) is only
// trusted for candidateTTL.
type candidateCache struct {
	mu  sync.Mutex
	max int
	m   map[string]cachedCandidate
}

type cachedCandidate struct {
	c  wkdCandidate
	ok bool
	at time.Time
}

const (
	candidateTTL      = time.Minute
	candidateCacheMax = 50000
)

func newCandidateCache() *candidateCache {
	return &candidateCache{max: candidateCacheMax, m: map[string]cachedCandidate{}}
}

func cacheKey(k keydir.Key, domain, hash string) string {
	return k.Fingerprint + "|" + k.Updated.UTC().Format(time.RFC3339Nano) + "|" + domain + "|" + hash
}

// candidate returns wkdCandidateOf(k, domain, hash, now), cached.
func (cc *candidateCache) candidate(k keydir.Key, domain, hash string, now time.Time) (wkdCandidate, bool, error) {
	if cc == nil {
		return wkdCandidateOf(k, domain, hash, now)
	}
	key := cacheKey(k, domain, hash)
	cc.mu.Lock()
	e, hit := cc.m[key]
	cc.mu.Unlock()
	if hit && now.Sub(e.at) < candidateTTL && !now.Before(e.at) {
		return e.c, e.ok, nil
	}
	c, ok, err := wkdCandidateOf(k, domain, hash, now)
	if err != nil {
		return c, ok, err
	}
	cc.mu.Lock()
	if len(cc.m) >= cc.max {
		clear(cc.m) // crude but bounded; the store stays the source of truth
	}
	cc.m[key] = cachedCandidate{c: c, ok: ok, at: now}
	cc.mu.Unlock()
	return c, ok, nil
}
