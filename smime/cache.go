package smime

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// cache keeps verified revocation answers until they expire, and failures
// for failureTTL. Concurrent requests for one key share one fetch.
type cache struct {
	mu      sync.Mutex
	entries map[string]cacheEntry
	flight  singleflight.Group
}

type cacheEntry struct {
	val     any
	err     error
	expires time.Time
}

func newCache() *cache {
	return &cache{entries: make(map[string]cacheEntry)}
}

// do returns the cached answer for key, or calls load once for all
// concurrent callers and caches its result: a value until the time load
// returns, an error for failureTTL. Errors that come from the caller's own
// context being done are not cached.
func (c *cache) do(ctx context.Context, now func() time.Time, key string, load func() (any, time.Time, error)) (any, error) {
	if e, ok := c.get(key, now()); ok {
		return e.val, e.err
	}
	v, err, _ := c.flight.Do(key, func() (any, error) {
		if e, ok := c.get(key, now()); ok {
			return e.val, e.err
		}
		val, until, err := load()
		switch {
		case err == nil:
			c.put(key, cacheEntry{val: val, expires: until}, now())
		case ctx.Err() == nil:
			c.put(key, cacheEntry{err: err, expires: now().Add(failureTTL)}, now())
		}
		return val, err
	})
	return v, err
}

func (c *cache) get(key string, now time.Time) (cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !now.Before(e.expires) {
		return cacheEntry{}, false
	}
	return e, true
}

// put stores e, first dropping expired entries when the cache is full and,
// if that is not enough, arbitrary ones: the cache is bounded.
func (c *cache) put(key string, e cacheEntry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxCacheEntries {
		for k, old := range c.entries {
			if !now.Before(old.expires) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < maxCacheEntries {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = e
}
