// Package spool holds a message while the gateway works on it. Small
// messages stay in memory; larger ones spill to a temporary file encrypted
// with age to an X25519 identity that exists only in this process's memory,
// so plaintext never reaches the disk (DESIGN.md, key custody). The file is
// unlinked as soon as it is created: a crash leaves nothing behind.
package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"filippo.io/age"
)

// ErrTooLarge is returned by Write once more than Options.MaxBytes arrive.
var ErrTooLarge = errors.New("spool: message exceeds the size limit")

// Options configure a spool. MemoryBytes and MaxBytes must be > 0.
type Options struct {
	Dir         string // where spill files are created; "" = os.TempDir()
	MemoryBytes int64  // messages up to this size never touch the disk
	MaxBytes    int64  // hard cap on the message size
}

// Writer receives one message. It is not safe for concurrent use.
type Writer struct {
	opts  Options
	mem   *bytes.Buffer // from buffers; nil once handed on or dropped
	size  int64
	file  *os.File
	enc   io.WriteCloser
	ident *age.X25519Identity
	err   error
}

// New returns a Writer for one message.
func New(opts Options) (*Writer, error) {
	if opts.MemoryBytes <= 0 || opts.MaxBytes <= 0 {
		return nil, errors.New("spool: MemoryBytes and MaxBytes must be positive")
	}
	return &Writer{opts: opts, mem: getBuffer()}, nil
}

// buffers recycles the in-memory spools: growing a fresh buffer to the
// message's size was 5% of the gateway's CPU at 100 KiB. A buffer is
// wiped before it goes back, so no message outlives its transaction in a
// pooled buffer, and buffers above maxPooled are left to the collector.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooled = 4 << 20

func getBuffer() *bytes.Buffer { return buffers.Get().(*bytes.Buffer) }

func putBuffer(b *bytes.Buffer) {
	if b == nil {
		return
	}
	clear(b.Bytes()[:b.Len()])
	b.Reset()
	if b.Cap() <= maxPooled {
		buffers.Put(b)
	}
}

// Write appends p to the message.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.size+int64(len(p)) > w.opts.MaxBytes {
		w.err = ErrTooLarge
		return 0, w.err
	}
	w.size += int64(len(p))
	if w.enc == nil && int64(w.mem.Len()+len(p)) <= w.opts.MemoryBytes {
		return w.mem.Write(p)
	}
	if w.enc == nil {
		if err := w.spill(); err != nil {
			w.err = err
			return 0, err
		}
	}
	if _, err := w.enc.Write(p); err != nil {
		w.err = fmt.Errorf("spool: write: %w", err)
		return 0, w.err
	}
	return len(p), nil
}

// spill moves the in-memory part to a new encrypted, already unlinked file.
func (w *Writer) spill() error {
	ident, err := age.GenerateX25519Identity()
	if err != nil {
		return fmt.Errorf("spool: generate key: %w", err)
	}
	f, err := os.CreateTemp(w.opts.Dir, "sealgate-spool-*")
	if err != nil {
		return fmt.Errorf("spool: create file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return fmt.Errorf("spool: unlink file: %w", err)
	}
	enc, err := age.Encrypt(f, ident.Recipient())
	if err != nil {
		f.Close()
		return fmt.Errorf("spool: start encryption: %w", err)
	}
	if _, err := enc.Write(w.mem.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("spool: write: %w", err)
	}
	putBuffer(w.mem)
	w.mem = nil
	w.file, w.enc, w.ident = f, enc, ident
	return nil
}

// Finish ends the message and returns it for reading.
func (w *Writer) Finish() (*Message, error) {
	if w.err != nil {
		w.Discard()
		return nil, w.err
	}
	m := &Message{size: w.size}
	if w.enc == nil {
		m.buf, m.mem = w.mem, w.mem.Bytes()
		w.mem = nil
		return m, nil
	}
	if err := w.enc.Close(); err != nil {
		w.Discard()
		return nil, fmt.Errorf("spool: finish encryption: %w", err)
	}
	st, err := w.file.Stat()
	if err != nil {
		w.Discard()
		return nil, fmt.Errorf("spool: stat: %w", err)
	}
	m.file, m.fileSize, m.ident = w.file, st.Size(), w.ident
	w.file = nil
	return m, nil
}

// Discard drops whatever was written.
func (w *Writer) Discard() {
	if w.file != nil {
		w.file.Close()
		w.file = nil
	}
	putBuffer(w.mem)
	w.mem = nil
	w.enc = nil
}

// Message is a complete spooled message that can be read many times.
type Message struct {
	size     int64
	buf      *bytes.Buffer // holds mem; back to the pool at Close
	mem      []byte
	file     *os.File
	fileSize int64
	ident    *age.X25519Identity
}

// Size is the message size in bytes.
func (m *Message) Size() int64 { return m.size }

// OnDisk reports whether the message spilled to an encrypted file.
func (m *Message) OnDisk() bool { return m.file != nil }

// Open returns a new reader positioned at the start of the message.
// Readers are independent; several may be open at once.
func (m *Message) Open() (io.Reader, error) {
	if m.file == nil {
		return bytes.NewReader(m.mem), nil
	}
	r, err := age.Decrypt(io.NewSectionReader(m.file, 0, m.fileSize), m.ident)
	if err != nil {
		return nil, fmt.Errorf("spool: open: %w", err)
	}
	return r, nil
}

// Close releases the message; its file (already unlinked) disappears.
// Readers from Open must not be used after Close.
func (m *Message) Close() error {
	putBuffer(m.buf)
	m.buf, m.mem = nil, nil
	if m.file == nil {
		return nil
	}
	err := m.file.Close()
	m.file = nil
	return err
}
