package gateway

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/sealgate/sealgate/gateway/policy"
)

// benchmarkRelay sends messages of size bytes through an in-process
// gateway into an in-process upstream, reusing one client connection.
func benchmarkRelay(b *testing.B, size int, encrypt bool) {
	t := &testing.T{}
	rules := []policy.Rule{{Match: "*", Encrypt: policy.Never}}
	if encrypt {
		rules = nil
	}
	g := startGateway(t, rules, nil)
	defer g.srv.Close()
	if encrypt {
		g.newKey(t, "alice@client.example")
	}
	body := strings.Repeat(strings.Repeat("x", 74)+"\r\n", size/76)
	msg := testMsg + body
	c, err := smtp.Dial(g.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.SendMail("s@firm.example", []string{"alice@client.example"}, strings.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	g.up.mu.Lock()
	g.up.msgs = nil
	g.up.mu.Unlock()
}

func BenchmarkRelay(b *testing.B) {
	for _, size := range []int{4 << 10, 100 << 10} {
		for _, enc := range []bool{false, true} {
			name := fmt.Sprintf("%dKiB/plain", size>>10)
			if enc {
				name = fmt.Sprintf("%dKiB/pgp-x25519", size>>10)
			}
			b.Run(name, func(b *testing.B) { benchmarkRelay(b, size, enc) })
		}
	}
}
