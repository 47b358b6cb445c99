package dbroute

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Metric names and attributes.
const (
	// MetricPoolLimit counts the times the pool limit ([WithMaxPools])
	// bit (Int64Counter), with the attribute outcome: "waited" when a
	// sandbox request started to wait for a pool slot, "gave_up" when a
	// waiting request's context ended first.
	MetricPoolLimit = "sandboxkit.dbroute.pool_limit"

	AttrOutcome = "outcome"

	OutcomeWaited = "waited"
	OutcomeGaveUp = "gave_up"
)

const instrumentationName = "github.com/sandboxkit/sandboxkit/dbroute"

type instruments struct {
	poolLimit metric.Int64Counter
	waited    metric.AddOption
	gaveUp    metric.AddOption
}

type limitOutcome uint8

const (
	outcomeWaited limitOutcome = iota
	outcomeGaveUp
)

func newInstruments(mp metric.MeterProvider) instruments {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	c, err := mp.Meter(instrumentationName).Int64Counter(MetricPoolLimit,
		metric.WithDescription("Sandbox requests that found every sandbox pool in use, by outcome."),
		metric.WithUnit("{request}"))
	if err != nil {
		otel.Handle(err)
		c = noop.Int64Counter{}
	}
	return instruments{
		poolLimit: c,
		waited:    metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrOutcome, OutcomeWaited))),
		gaveUp:    metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrOutcome, OutcomeGaveUp))),
	}
}

func (ins instruments) limit(ctx context.Context, o limitOutcome) {
	opt := ins.waited
	if o == outcomeGaveUp {
		opt = ins.gaveUp
	}
	ins.poolLimit.Add(context.WithoutCancel(ctx), 1, opt)
}
