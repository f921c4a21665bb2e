package gateway

import (
	"errors"
	"fmt"

	"github.com/sealgate/sealgate/gateway/smtpd"
)

// Reply is the one error type the gateway answers SMTP clients with: the
// code and enhanced code the peer sees, a generic text for the peer, and the
// cause for the log. The peer never sees the cause (STYLE rule 5).
type Reply struct {
	Code     int
	Enhanced smtpd.EnhancedCode
	Text     string
	Cause    error
}

func (r *Reply) Error() string {
	if r.Cause == nil {
		return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.Text)
	}
	return fmt.Sprintf("%d %d.%d.%d %s: %v", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.Text, r.Cause)
}

func (r *Reply) Unwrap() error { return r.Cause }

// Temporary reports whether the sender should retry (a 4xx reply).
func (r *Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

func reply(code int, enh smtpd.EnhancedCode, text string, cause error) *Reply {
	return &Reply{Code: code, Enhanced: enh, Text: text, Cause: cause}
}

// The replies the gateway gives. Texts are generic on purpose.
var (
	codeNoKey        = smtpd.EnhancedCode{5, 7, 1}
	codeLookupFailed = smtpd.EnhancedCode{4, 7, 0}
	codeLocalError   = smtpd.EnhancedCode{4, 3, 0}
	codeUpstream     = smtpd.EnhancedCode{4, 4, 1}
)

func errNoKey(cause error) *Reply {
	return reply(550, codeNoKey, "Recipient requires encryption and no usable key is known", cause)
}

func errLookup(cause error) *Reply {
	return reply(451, codeLookupFailed, "Recipient key lookup failed, try again later", cause)
}

func errLocal(cause error) *Reply {
	return reply(451, codeLocalError, "Local error in processing, try again later", cause)
}

func errUpstream(cause error) *Reply {
	return reply(451, codeUpstream, "Upstream delivery failed, try again later", cause)
}

// toSMTP maps any error to the reply the client gets. Every error leaving
// the session passes through here; anything unknown becomes 451 4.3.0 so
// the sender retries.
func toSMTP(err error) *smtpd.Error {
	if err == nil {
		return nil
	}
	var r *Reply
	if errors.As(err, &r) {
		return &smtpd.Error{Code: r.Code, Enhanced: r.Enhanced, Message: r.Text}
	}
	var s *smtpd.Error
	if errors.As(err, &s) {
		return s
	}
	return &smtpd.Error{Code: 451, Enhanced: codeLocalError, Message: "Local error in processing, try again later"}
}
