//go:build unix

package keydir

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// changeCounter is a 64-bit counter in a small file beside the SQLite
// database, mapped into the memory of every process that opens the
// database through sealgate. Every committed change to the directory
// increments it (after the commit), so a lookup that finds it where it was
// at its last generation read knows, without asking SQLite, that no change
// has completed since (see currentGeneration).
type changeCounter struct {
	mem []byte
	v   *uint64
}

// openChangeCounter maps path (created 0600 if missing, grown to 8 bytes).
func openChangeCounter(path string) (*changeCounter, error) {
	if err := createPrivateFile(path); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("keydir: change counter: %w", err)
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keydir: change counter: %w", err)
	}
	if st.Size() < 8 {
		// Growing fills with zeros; two processes doing it at once agree.
		if err := f.Truncate(8); err != nil {
			return nil, fmt.Errorf("keydir: change counter: %w", err)
		}
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, 8, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("keydir: change counter: map %s: %w", path, err)
	}
	// The mapping starts on a page boundary, so the counter is aligned.
	c := &changeCounter{mem: mem, v: (*uint64)(unsafe.Pointer(&mem[0]))}
	// Unmapped once nothing can read it any more, not at the store's Close:
	// a lookup still running then would touch an unmapped page and crash.
	runtime.AddCleanup(c, func(m []byte) { _ = unix.Munmap(m) }, mem)
	return c, nil
}

func (c *changeCounter) load() uint64 { return atomic.LoadUint64(c.v) }
func (c *changeCounter) bump()        { atomic.AddUint64(c.v, 1) }
