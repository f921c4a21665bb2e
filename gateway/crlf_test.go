package gateway

import (
	"bytes"
	"testing"
)

func TestCRLFWriter(t *testing.T) {
	cases := map[string]string{
		"a\r\nb\r\n":        "a\r\nb\r\n",
		"a\nb\n":            "a\r\nb\r\n",
		"a\rb\r":            "a\r\nb\r\n",
		"x\n.\ny":           "x\r\n.\r\ny",
		"x\r\n.\ry":         "x\r\n.\r\ny",
		"x\r.\r\ny":         "x\r\n.\r\ny",
		"\r\r\n\n":          "\r\n\r\n\r\n",
		"no newline":        "no newline",
		"x\r\n\x00.\r\n":    "x\r\n\x00.\r\n",
		"trailing cr\r":     "trailing cr\r\n",
		"\n\r":              "\r\n\r\n",
		"mixed\r\n\n\r\r\n": "mixed\r\n\r\n\r\n\r\n",
	}
	for in, want := range cases {
		// Every split point must give the same output: CRLF may straddle writes.
		for split := 0; split <= len(in); split++ {
			var out bytes.Buffer
			w := newCRLFWriter(&out)
			w.Write([]byte(in[:split]))
			w.Write([]byte(in[split:]))
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if out.String() != want {
				t.Errorf("%q split at %d: got %q, want %q", in, split, out.String(), want)
			}
		}
	}
}
