package pgp

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

func TestCRC24(t *testing.T) {
	// CRC-24/OPENPGP check value (RFC 9580 §6.1 parameters).
	if got := crc24(crc24Init, []byte("123456789")); got != 0x21cf02 {
		t.Errorf("crc24(123456789) = %06x, want 21cf02", got)
	}
	if got := crc24(crc24Init, nil); got != crc24Init {
		t.Errorf("crc24 of nothing = %06x", got)
	}
}

// ourArmor armors data with armorWriter, fed in random chunks.
func ourArmor(t *testing.T, data []byte, eol string, checksum bool, rng *rand.Rand) string {
	t.Helper()
	var buf bytes.Buffer
	out := bufio.NewWriter(&buf)
	a, err := newArmorWriter(out, eol, checksum)
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(130))
		if k, err := a.Write(rest[:n]); err != nil || k != n {
			t.Fatalf("Write = %d, %v", k, err)
		}
		rest = rest[n:]
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func goCryptoArmor(t *testing.T, data []byte, checksum bool) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := armor.EncodeWithChecksumOption(&buf, "PGP MESSAGE", nil, checksum)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestArmorWriterMatchesGoCrypto(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{1, 2, 3, 47, 48, 49, 95, 96, 97, 144, 1000, 4096, 100 << 10}
	for _, size := range sizes {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		for _, checksum := range []bool{true, false} {
			want := goCryptoArmor(t, data, checksum)
			if got := ourArmor(t, data, "\n", checksum, rng); got != want {
				t.Fatalf("size %d checksum %v: differs from go-crypto\ngot:\n%s\nwant:\n%s", size, checksum, got, want)
			}
			crlf := ourArmor(t, data, "\r\n", checksum, rng)
			if crlf != strings.ReplaceAll(want, "\n", "\r\n") {
				t.Fatalf("size %d checksum %v: CRLF armor is not the LF armor with CRLF", size, checksum)
			}
			block, err := armor.Decode(strings.NewReader(crlf))
			if err != nil {
				t.Fatal(err)
			}
			back, err := io.ReadAll(block.Body)
			if err != nil || !bytes.Equal(back, data) {
				t.Fatalf("size %d: CRLF armor does not decode back: %v", size, err)
			}
		}
	}
}

func TestArmorWriterWriteError(t *testing.T) {
	out := bufio.NewWriterSize(failingWriter{io.ErrShortWrite}, 16)
	a, err := newArmorWriter(out, "\n", true)
	if err == nil {
		_, err = a.Write(make([]byte, 1000))
	}
	if err == nil {
		err = a.Close()
	}
	if err == nil {
		t.Fatal("write errors are lost")
	}
}
