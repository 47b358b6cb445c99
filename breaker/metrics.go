package breaker

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Metric names and attributes.
const (
	// MetricDecisions counts the group's decisions (Int64Counter), with
	// the attributes sandbox.id (absent for baseline traffic), outcome
	// and, when [Settings.Name] is set, breaker.name.
	MetricDecisions = "sandboxkit.breaker.decisions"
	// MetricOpen is the number of keys whose breaker is not closed (open
	// or half-open), an Int64UpDownCounter with breaker.name when set.
	MetricOpen = "sandboxkit.breaker.open"

	AttrOutcome = "outcome"
	AttrName    = "breaker.name"
	AttrID      = "sandbox.id"
)

// The values of the outcome attribute.
const (
	OutcomeAdmitted      = "admitted"
	OutcomeOpen          = "open"
	OutcomeThrottled     = "throttled"
	OutcomeTooManyFlight = "too_many_in_flight"
)

const instrumentationName = "github.com/sandboxkit/sandboxkit/breaker"

type outcome uint8

const (
	admitted outcome = iota
	refusedOpen
	refusedRate
	refusedFlight
	numOutcomes
)

func (o outcome) String() string {
	switch o {
	case refusedOpen:
		return OutcomeOpen
	case refusedRate:
		return OutcomeThrottled
	case refusedFlight:
		return OutcomeTooManyFlight
	}
	return OutcomeAdmitted
}

type instruments struct {
	decisions metric.Int64Counter
	open      metric.Int64UpDownCounter
	openOpts  []metric.AddOption
}

func newInstruments(mp metric.MeterProvider, name string) instruments {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(instrumentationName)
	var ins instruments
	var err error
	ins.decisions, err = m.Int64Counter(MetricDecisions,
		metric.WithDescription("Decisions of the per-sandbox budgets, by sandbox and outcome."),
		metric.WithUnit("{call}"))
	if err != nil {
		otel.Handle(err)
		ins.decisions = noop.Int64Counter{}
	}
	ins.open, err = m.Int64UpDownCounter(MetricOpen,
		metric.WithDescription("Keys whose circuit breaker is open or half-open."),
		metric.WithUnit("{breaker}"))
	if err != nil {
		otel.Handle(err)
		ins.open = noop.Int64UpDownCounter{}
	}
	if name != "" {
		ins.openOpts = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrName, name)))}
	}
	return ins
}

// attrs returns the attribute option of decisions of key id with outcome o.
func attrs(name, id string, o outcome) []metric.AddOption {
	kv := make([]attribute.KeyValue, 0, 3)
	kv = append(kv, attribute.String(AttrOutcome, o.String()))
	if id != "" {
		kv = append(kv, attribute.String(AttrID, id))
	}
	if name != "" {
		kv = append(kv, attribute.String(AttrName, name))
	}
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kv...))}
}
