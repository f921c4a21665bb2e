package main

// A pseudo-terminal for the tests that need a real one: sealmail's own
// passphrase prompts, and Sequoia, which reads passwords only from a
// terminal.

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pty is the master side of a pseudo-terminal and everything read from it.
type pty struct {
	master, slave *os.File
	mu            sync.Mutex
	seen          strings.Builder
	done          chan struct{}
}

func newPTY(t testing.TB) *pty {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	p := &pty{master: m, slave: s, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 4096)
		for {
			n, err := m.Read(buf)
			p.mu.Lock()
			p.seen.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		s.Close()
		m.Close()
		<-p.done
	})
	return p
}

// output is everything the terminal showed so far.
func (p *pty) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen.String()
}

// answer waits until the terminal has shown prompt n times in all, then
// types line and Enter.
func (p *pty) answer(t testing.TB, prompt string, n int, line string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); strings.Count(p.output(), prompt) < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("the terminal never showed %q %d times; it showed %q", prompt, n, p.output())
			return
		}
	}
	if _, err := p.master.Write([]byte(line + "\r")); err != nil {
		t.Error(err)
	}
}

// shows reports whether the terminal shows s within 10 s: what the
// program wrote reaches the master side a little later.
func (p *pty) shows(s string) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if strings.Contains(p.output(), s) {
			return true
		}
	}
	return false
}

// sysProcAttr makes the child a session leader with the pty as its
// controlling terminal; fd is the child's descriptor of the slave.
func (p *pty) sysProcAttr(fd int) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: fd}
}
