package gateway

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the gateway's Prometheus metrics.
type Metrics struct {
	messages       *prometheus.CounterVec
	copies         *prometheus.CounterVec
	recipients     *prometheus.CounterVec
	duration       prometheus.Histogram
	lookupErrors   prometheus.Counter
	upstreamErrors prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealgate_messages_total",
			Help: "Messages received in DATA, by outcome (delivered, deferred, rejected).",
		}, []string{"outcome"}),
		copies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealgate_message_copies_total",
			Help: "Copies accepted by upstream, by format (pgp, smime, plain).",
		}, []string{"format"}),
		recipients: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealgate_recipients_total",
			Help: "Recipients by decision at RCPT time (pgp, smime, plain, refused, deferred).",
		}, []string{"decision"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sealgate_message_duration_seconds",
			Help:    "Time from the end of DATA to the final reply, per message.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		lookupErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sealgate_key_lookup_errors_total",
			Help: "Key directory lookups that failed.",
		}),
		upstreamErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sealgate_upstream_errors_total",
			Help: "Messages deferred because upstream failed.",
		}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.copies, m.recipients, m.duration, m.lookupErrors, m.upstreamErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe records one message's outcome.
func (s *Server) observe(groups []*group, err error, took time.Duration) {
	m := s.metrics
	m.duration.Observe(took.Seconds())
	for _, g := range groups {
		if g.reply != "" {
			m.copies.WithLabelValues(g.format()).Inc()
		}
	}
	var rep *Reply
	switch {
	case err == nil:
		m.messages.WithLabelValues("delivered").Inc()
	case errors.As(err, &rep) && !rep.Temporary():
		m.messages.WithLabelValues("rejected").Inc()
	default:
		m.messages.WithLabelValues("deferred").Inc()
	}
	if errors.As(err, &rep) && rep.Enhanced == codeUpstream {
		m.upstreamErrors.Inc()
	}
}
