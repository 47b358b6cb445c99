// Package breaker bounds the blast radius of each sandbox: a [Group] gives
// every sandbox its own circuit breaker, token-bucket rate limit and cap on
// calls in flight, so that a bad sandbox build is throttled and broken off
// alone while baseline traffic goes on untouched.
//
// # Use
//
// Make one [Group] per dependency, and wrap every call to it:
//
//	g := breaker.NewGroup(breaker.Settings{
//		Budget: breaker.Budget{Rate: 50, Burst: 10, MaxInFlight: 20}, // per sandbox
//	}, breaker.WithRoutes(table)) // per-sandbox overrides from the route table
//	done, err := g.Allow(ctx) // the sandbox is read from ctx
//	if err != nil {
//		d, _ := breaker.RetryAfter(err) // refused: ErrOpen, ErrThrottled or ErrTooManyInFlight
//		...
//	}
//	resp, err := call(ctx)
//	done(err) // or done(breaker.HTTPStatus(resp.StatusCode))
//
// # Middleware
//
// The protocol middleware does this for you. Give the group to
// httpmw.WithBreaker or grpcmw.WithBreaker:
//
//   - on the client side (httpmw.Transport, grpcmw's client interceptors
//     and Router) a call over its budget is not sent and the caller gets
//     an error wrapping the refusal; 5xx responses, connection errors and
//     the gRPC codes Unavailable, Internal, Unknown and DeadlineExceeded
//     count as failures;
//   - on the server side (httpmw.NewHandler, httpmw.Proxy, grpcmw's server
//     interceptors) a service protects itself from a runaway sandbox: a
//     request over its budget gets HTTP 429 (rate) or 503 (breaker open,
//     too many in flight) with Retry-After, or gRPC ResourceExhausted or
//     Unavailable with a RetryInfo detail, and the handler does not run.
//
// Either side audits each refusal (decision "throttled") on its own
// logger. A group guards one dependency: give it to one layer of a call
// path, not two, or each call spends its budget twice. Middleware asks
// [Group.GuardsBaseline] once, when it is built, so that traffic without a
// sandbox skips the group altogether when it has no budget.
//
// # Budgets
//
// The key is the sandbox ID of the call. Baseline traffic (no sandbox) has
// no budget unless [Settings.Baseline] gives it one; without it, baseline
// calls return at once and cost nothing. A sandbox gets [Settings.Budget],
// with the non-zero fields of its route table entry ([WithRoutes]) and of
// [Settings.Override] replacing the defaults. A call is refused when the
// breaker is open ([ErrOpen]), when the key has [Budget.MaxInFlight] calls
// in flight ([ErrTooManyInFlight]) or when its token bucket is empty
// ([ErrThrottled]); each refusal carries a retry-after hint, read with
// [RetryAfter]. A refused call uses no token.
//
// # Circuit breaker
//
// Each key's breaker is a github.com/sony/gobreaker/v2 breaker. It opens
// after [Settings.Failures] consecutive failures, refuses calls for
// [Settings.OpenTimeout], then turns half-open and admits
// [Settings.Probes] calls; that many successes in a row close it, one
// failure opens it again. An error wrapping context.Canceled (the caller
// gave up) counts as neither success nor failure; [Settings.IsFailure]
// decides about other errors. Outcomes of calls admitted before the breaker
// last changed state are ignored.
//
// gobreaker reads time.Now and cannot take a clock, so the group keeps the
// open period itself, on the clock of [WithClock], and gobreaker counts the
// outcomes and decides when to open and when to close. Tests drive every
// state change with a fake clock, without sleeping.
//
// # Eviction
//
// A key that had no call for [Settings.IdleTimeout] (no call started, no
// failure reported), has no call in flight, whose breaker is not open and
// whose token bucket has refilled is evicted with its counters. Calls sweep
// the keys as they go, in bounded steps, so that no call pays for the
// eviction of more than a few other keys, however many went idle: about
// 2048 times per IdleTimeout one call looks at the next 32 keys, and a call
// that creates a key looks at 2 keys of its shard. Steady traffic thus
// looks at about 65,000 keys per IdleTimeout, plus two per new key, so
// memory stays bounded with many short-lived sandboxes; a group with more
// idle keys than that evicts them over several IdleTimeouts.
// [Group.Sweep] evicts every idle key at once, on the caller's goroutine
// (call it from a ticker of your own if you want eviction sooner). The
// group starts no goroutine and needs no closing.
//
// Before that, a key the sweep finds idle for a quarter of IdleTimeout is
// compacted when a fresh key would be in its state: its breaker closed with
// no failure counted and no call in flight. It lets go of its gobreaker and
// its metric attribute sets (a closed gobreaker with zero counts is made
// again when a call fails). Its token bucket stays: it is part of the key's
// entry. A key holds about 245 bytes, busy or idle (with the noop meter).
// Its decisions are exactly those it would have made uncompacted.
//
// # Audit and metrics
//
// Every state change of a breaker is one audit record on the logger of
// [WithLogger] (decision "throttled" when it opens or turns half-open,
// "admitted" when it closes, the change in the reason). The group counts
// its decisions ([MetricDecisions], by sandbox and outcome) and the
// breakers that are not closed ([MetricOpen]) through the OpenTelemetry
// metric API ([WithMeterProvider]).
//
// # Performance and concurrency
//
// An admitted call of a warm key and its done cost no allocation; a
// refusal allocates its error. A call finds its key without a lock and
// without writing to memory other keys' calls use: each shard of keys is
// an open-addressing table of (hash, entry) slots read with atomic loads,
// and a key's entry holds its breaker state, in-flight count and token
// bucket together. What a call reads of its key fills the entry's first
// two cache lines: an ID of up to 15 bytes is compared there (a longer one
// lives in a string of its own), and a key whose breaker never left the
// closed state has no phase object to read. With many live keys, where
// each call finds its key out of the processor's caches, that bounds what
// a call reads from memory: the table slot, two lines of the entry and
// its done function (besides the caller's context and sandbox ID); the
// slot, the entry and the done function are each found through the one
// before, so only the entry's two lines are fetched together; an ID
// longer than 15 bytes adds two (its string header, in the entry's third
// line, and its bytes). A [Group] is safe for concurrent use; the
// done function of a call may be called from any goroutine, exactly once.
package breaker
