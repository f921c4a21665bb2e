package gateway

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/sealgate/sealgate/gateway/policy"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestOneLogLinePerMessageWithoutContent(t *testing.T) {
	var buf syncBuffer
	g := startGateway(t, []policy.Rule{{Match: "court.example", Encrypt: policy.Required}, {Match: "news.example", Encrypt: policy.Never}},
		func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(&buf, nil)) })
	alice := g.newKey(t, "alice@client.example")
	res := g.send(t, "sender@firm.example", []string{"alice@client.example", "ed@news.example", "clerk@court.example"}, testMsg, nil)
	if res.dataErr != nil {
		t.Fatal(res.dataErr)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.Contains(l, `"msg":"message delivered"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d message lines in log:\n%s", len(lines), buf.String())
	}
	line := lines[0]
	fpr := alice.PrimaryKey.KeyIdString()
	for _, want := range []string{`"msg":"message delivered"`, "pgp ", fpr, "policy never", "refused", `"upstream":[`} {
		if !strings.Contains(strings.ToUpper(line), strings.ToUpper(want)) {
			t.Errorf("log line lacks %q:\n%s", want, line)
		}
	}
	for _, secret := range []string{"Merger", "CANARY-BODY", "TestMailer"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("log contains message content %q", secret)
		}
	}
}
