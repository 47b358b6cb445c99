// Package egress is the budget kernel the adapters share: it puts one
// call (an HTTP round trip or a proxied request, a gRPC call, a Kafka
// write) under the per-sandbox budget of a [breaker.Group] and writes the
// throttled record of a refusal. httpmw, grpcmw and kafkamw translate its
// refusal to their protocol (HTTP 429/503, gRPC ResourceExhausted/
// Unavailable, a Go error) and tell the done function the call's outcome
// in their protocol's terms.
package egress

import (
	"context"
	"log/slog"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Budget applies a group's budgets to calls. Its zero value budgets
// nothing ([Budget.Covers] is false, and [Budget.Allow] admits every
// call). It is immutable and safe for concurrent use.
type Budget struct {
	g        *breaker.Group
	baseline bool // g budgets calls without a sandbox too
	logger   *slog.Logger
	protocol string
}

// New returns the budget of g (nil: none) whose refusals are audited on
// logger (nil: silent) with protocol (audit.HTTP, audit.GRPC, audit.Kafka).
func New(g *breaker.Group, logger *slog.Logger, protocol string) Budget {
	if g == nil {
		return Budget{}
	}
	return Budget{g: g, baseline: g.GuardsBaseline(), logger: logger, protocol: protocol}
}

// Active reports whether there is a group at all.
func (b *Budget) Active() bool { return b.g != nil }

// Covers reports whether a call with (sandboxed) or without a sandbox is
// budgeted: a group is set, and the call has a sandbox or the group guards
// the baseline too.
func (b *Budget) Covers(sandboxed bool) bool { return b.g != nil && (sandboxed || b.baseline) }

// Allow asks the budget of s (the zero Sandbox for baseline traffic) for
// one call to target (a service, host, method or topic). It returns the
// function to call with the call's outcome (see [breaker.Group.AllowSandbox]:
// nil for a success, context.Canceled for one that counts for nothing),
// or the group's refusal, unwrapped, after writing its throttled record.
// peer, when not nil, gives the record's peer (a server's client); it is
// called only for a record.
func (b *Budget) Allow(ctx context.Context, s propagation.Sandbox, target string, peer func() string) (func(error), error) {
	if b.g == nil {
		return noOutcome, nil
	}
	done, err := b.g.AllowSandbox(ctx, s)
	if err == nil {
		return done, nil
	}
	if b.logger != nil {
		ev := audit.Event{Decision: audit.Throttled, Sandbox: s, Protocol: b.protocol, Target: target, Reason: err.Error()}
		if peer != nil {
			ev.Peer = peer()
		}
		audit.Emit(ctx, b.logger, ev)
	}
	return nil, err
}

// noOutcome is the done function of a call no group budgets.
func noOutcome(error) {}
