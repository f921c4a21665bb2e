package spool

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"testing"
)

func spoolAll(t *testing.T, opts Options, data []byte, chunk int) *Message {
	t.Helper()
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for len(data) > 0 {
		n := min(chunk, len(data))
		if _, err := w.Write(data[:n]); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
	m, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func readAll(t *testing.T, m *Message) []byte {
	t.Helper()
	r, err := m.Open()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSmallMessageStaysInMemory(t *testing.T) {
	dir := t.TempDir()
	data := []byte("Subject: hi\r\n\r\nbody\r\n")
	m := spoolAll(t, Options{Dir: dir, MemoryBytes: 1024, MaxBytes: 4096}, data, 3)
	if m.OnDisk() {
		t.Fatal("small message spilled to disk")
	}
	if got := readAll(t, m); !bytes.Equal(got, data) {
		t.Fatalf("read back %q", got)
	}
}

func TestLargeMessageSpillsEncryptedAndLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	marker := []byte("CANARY-PLAINTEXT-SPOOL")
	data := bytes.Repeat(append(marker, '\n'), 20000)
	w, err := New(Options{Dir: dir, MemoryBytes: 4096, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:5000]); err != nil {
		t.Fatal(err)
	}
	// While the message is being written the spill file is open but already
	// unlinked: nothing is visible in the directory.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("spool directory has %d entries", len(entries))
	}
	// And what the process holds open is ciphertext.
	fd := w.file
	if _, err := w.Write(data[5000:]); err != nil {
		t.Fatal(err)
	}
	m, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !m.OnDisk() {
		t.Fatal("large message not spilled")
	}
	raw, err := io.ReadAll(io.NewSectionReader(fd, 0, m.fileSize))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, marker) {
		t.Fatal("plaintext found in spill file")
	}
	for i := 0; i < 2; i++ { // re-openable
		if got := readAll(t, m); !bytes.Equal(got, data) {
			t.Fatalf("read %d: %d bytes differ from %d written", i, len(got), len(data))
		}
	}
}

func TestTooLarge(t *testing.T) {
	w, err := New(Options{Dir: t.TempDir(), MemoryBytes: 10, MaxBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 60)
	rand.Read(buf)
	if _, err := w.Write(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(buf); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("second write: %v, want ErrTooLarge", err)
	}
	if _, err := w.Finish(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Finish: %v, want ErrTooLarge", err)
	}
}

func TestNewRejectsZeroLimits(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("zero limits accepted")
	}
}

// TestPooledBufferWiped: a memory spool goes back to the pool only after
// its bytes are zeroed, so no message outlives its transaction there.
func TestPooledBufferWiped(t *testing.T) {
	w, err := New(Options{MemoryBytes: 1 << 20, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("privileged text")); err != nil {
		t.Fatal(err)
	}
	m, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	seen := m.mem[:len(m.mem):len(m.mem)] // the pooled buffer's bytes
	if string(seen) != "privileged text" {
		t.Fatalf("message holds %q", seen)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for i, b := range seen {
		if b != 0 {
			t.Fatalf("byte %d of a released spool buffer is %q, want 0", i, b)
		}
	}
}
