package gateway

import (
	"context"
	"testing"
)

// BenchmarkKeySelection is the per-recipient work at RCPT time: the
// directory lookup, the parsed-certificate cache and the usability check.
func BenchmarkKeySelection(b *testing.B) {
	t := &testing.T{}
	g := startGateway(t, nil, nil)
	defer g.srv.Close()
	g.newKey(t, "alice@client.example")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ans, err := g.srv.lookupKeys(ctx, "alice@client.example")
		if err != nil || ans.pgp == nil {
			b.Fatal(err)
		}
	}
}
