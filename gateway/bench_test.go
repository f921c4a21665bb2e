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
// format is "plain", "pgp" or "smime".
func benchmarkRelay(b *testing.B, size int, format string) {
	t := &testing.T{}
	rules := []policy.Rule{{Match: "*", Encrypt: policy.Never}}
	var tweak func(*Options)
	var ca *testCA
	if format != "plain" {
		rules = nil
	}
	if format == "smime" {
		ca = newTestCA(t)
		tweak = enableSMIME(t, ca)
	}
	g := startGateway(t, rules, func(o *Options) {
		if tweak != nil {
			tweak(o)
		}
		o.SpoolMemoryBytes = 2 << 20
	})
	defer g.srv.Close()
	switch format {
	case "pgp":
		g.newKey(t, "alice@client.example")
	case "smime":
		cert, _ := ca.issue(t, "alice@client.example")
		g.publishX509(t, cert)
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
	for _, size := range []int{4 << 10, 100 << 10, 1 << 20} {
		for _, format := range []string{"plain", "pgp", "smime"} {
			b.Run(fmt.Sprintf("%dKiB/%s", size>>10, format), func(b *testing.B) { benchmarkRelay(b, size, format) })
		}
	}
}
