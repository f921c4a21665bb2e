package gateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sealgate/sealgate/gateway/policy"
)

func TestMetricsCountMessagesAndRecipients(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, []policy.Rule{{Match: "court.example", Encrypt: policy.Required}}, func(o *Options) { o.Metrics = m })
	g.newKey(t, "alice@client.example")
	res := g.send(t, "s@firm.example", []string{"alice@client.example", "bob@other.example", "clerk@court.example"}, testMsg, nil)
	if res.dataErr != nil {
		t.Fatal(res.dataErr)
	}
	g.up.srv.Close()
	if res := g.send(t, "s@firm.example", []string{"bob@other.example"}, testMsg, nil); res.dataErr == nil {
		t.Fatal("upstream down, yet delivered")
	}
	checks := []struct {
		c    prometheus.Collector
		want float64
	}{
		{m.messages.WithLabelValues("delivered"), 1},
		{m.messages.WithLabelValues("deferred"), 1},
		{m.copies.WithLabelValues("pgp"), 1},
		{m.copies.WithLabelValues("plain"), 1},
		{m.recipients.WithLabelValues("pgp"), 1},
		{m.recipients.WithLabelValues("plain"), 2},
		{m.recipients.WithLabelValues("refused"), 1},
		{m.upstreamErrors, 1},
	}
	for i, c := range checks {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("check %d: got %v, want %v", i, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.duration); n != 1 {
		t.Errorf("duration histogram: %d series", n)
	}
}
