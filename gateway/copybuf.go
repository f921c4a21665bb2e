package gateway

import (
	"io"
	"sync"
)

// copyBuffers recycles the 32 KiB buffers that io.Copy allocates on every
// call (and io.MultiReader's WriteTo on every call too): two per message,
// about half of what a 4 KiB message allocated.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyPooled is io.Copy through a pooled buffer, wiped before it goes back
// to the pool since it held message bytes. src is wrapped so that a
// WriterTo (io.MultiReader) cannot bypass the buffer; a dst that is an
// io.ReaderFrom still reads src itself.
func copyPooled(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBuffers.Get().(*[]byte)
	defer func() {
		clear(*bp)
		copyBuffers.Put(bp)
	}()
	return io.CopyBuffer(dst, struct{ io.Reader }{src}, *bp)
}
