package kafkamw

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metric names and attributes.
const (
	// MetricMessages is a reader's messages by outcome, an asynchronous
	// Int64ObservableCounter read from [Reader.Counts] when the meter
	// provider collects: the hot path pays nothing for it. Attributes:
	// outcome (one of the Outcome values) and messaging.consumer.group.name
	// (the reader's group, a sandbox group for a sandbox reader).
	MetricMessages = "sandboxkit.kafkamw.messages"

	AttrOutcome = "outcome"
	AttrGroup   = "messaging.consumer.group.name"
)

// The values of the outcome attribute, one per field of [Counts].
const (
	OutcomeDelivered    = "delivered"
	OutcomeSkipped      = "skipped"
	OutcomeUnreadable   = "unreadable"
	OutcomeOrphaned     = "orphaned"
	OutcomeDeadLettered = "dead_lettered"
	// OutcomeDeadLetterFailed counts the messages given up on whose
	// dead-letter write failed ([Counts].DeadLetterFailed).
	OutcomeDeadLetterFailed = "dead_letter_failed"
	OutcomeFailed           = "failed"
	OutcomeRetried          = "retried"
	OutcomeWaited           = "waited"
	OutcomeFuture           = "future"
	// OutcomeForwarded, OutcomeUnforwardable and OutcomeDuplicate count
	// the split mode's forwarded, unforwardable and duplicate messages
	// ([WithSplit]).
	OutcomeForwarded     = "forwarded"
	OutcomeUnforwardable = "unforwardable"
	OutcomeDuplicate     = "duplicate"
)

const instrumentationName = "github.com/sandboxkit/sandboxkit/kafkamw"

// observe registers the reader's counts with the meter provider. It returns
// the registration, which Close ends; nil when the instrument cannot be
// made (the error goes to otel.Handle).
func (r *Reader) observe(mp metric.MeterProvider) metric.Registration {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(instrumentationName)
	c, err := m.Int64ObservableCounter(MetricMessages,
		metric.WithDescription("Messages a sandboxkit Kafka reader decided, by outcome."),
		metric.WithUnit("{message}"))
	if err != nil {
		otel.Handle(err)
		return nil
	}
	group := attribute.String(AttrGroup, r.group)
	outcomes := [...]string{OutcomeDelivered, OutcomeSkipped, OutcomeUnreadable, OutcomeOrphaned,
		OutcomeDeadLettered, OutcomeDeadLetterFailed, OutcomeFailed, OutcomeRetried, OutcomeWaited, OutcomeFuture,
		OutcomeForwarded, OutcomeUnforwardable, OutcomeDuplicate}
	var opts [len(outcomes)]metric.ObserveOption
	for i, o := range outcomes {
		opts[i] = metric.WithAttributeSet(attribute.NewSet(group, attribute.String(AttrOutcome, o)))
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		n := r.Counts()
		for i, v := range [...]int64{n.Delivered, n.Skipped, n.Unreadable, n.Orphaned,
			n.DeadLettered, n.DeadLetterFailed, n.Failed, n.Retries, n.Waits, n.Future,
			n.Forwarded, n.Unforwardable, n.Duplicates} {
			o.ObserveInt64(c, v, opts[i])
		}
		return nil
	}, c)
	if err != nil {
		otel.Handle(err)
		return nil
	}
	return reg
}
