package redisroute

import "errors"

var (
	// ErrConfig reports a misconfiguration found by a constructor ([New],
	// [Guard], [Router.WithTimeout]). The error's message names the option
	// or argument.
	ErrConfig = errors.New("redisroute: invalid configuration")

	// ErrSandboxOnBaseline reports a sandbox context on a client protected
	// by [Guard]: nothing was sent, unless the error wraps [ErrLeaked] too.
	ErrSandboxOnBaseline = errors.New("redisroute: sandbox context on the baseline client")

	// ErrRefused reports a command that a sandbox may not run because it
	// would not stay inside the sandbox's database (pub/sub, scripts,
	// server administration, commands that reach another database), or
	// that cannot keep its meaning when routed (a bare WATCH or MULTI:
	// use [Router.Watch] and TxPipelined). Nothing was sent.
	ErrRefused = errors.New("redisroute: command refused for a sandbox")

	// ErrNoSandboxDatabase reports a sandbox that has no database: its ID
	// is not a valid sandbox ID (the error wraps propagation.ErrInvalidID
	// too), it is not in the route table ([WithRoutes]), or every database
	// of the router's range is taken. Nothing was sent.
	ErrNoSandboxDatabase = errors.New("redisroute: no database for the sandbox")

	// ErrNotSynced reports a route table ([WithRoutes]) that has never
	// loaded: it cannot say which sandboxes exist. A sandbox command is
	// refused (the error wraps ErrNoSandboxDatabase too) and [Router.Reap]
	// flushes nothing. Nothing was sent.
	ErrNotSynced = errors.New("redisroute: route table not synced")

	// ErrLeaked reports a sandbox command that go-redis wrote to the
	// baseline's connection before any hook could stop it: an
	// AutoPipeliner in full-duplex mode (AutoPipelineOptions.FullDuplex)
	// writes each command first and runs the hooks afterwards. [New] and
	// [Guard] pin the client's AutoPipeliners to half duplex; one gets a
	// full-duplex engine only by closing the pinned instance and then
	// asking AutoPipelineWithOptions or AsyncAutoPipelineWithOptions for
	// FullDuplex. The command HAS RUN on the baseline's database: the
	// hooks only find out, fail it with this error, clear its reply
	// (production's: a Val() read without looking at Err() gets the zero
	// value), audit it (rejected) and never run it a second time in the
	// sandbox. Unlike every other error of the package, something was
	// sent.
	ErrLeaked = errors.New("redisroute: sandbox command already sent to the baseline")

	// ErrProductionIntoSandboxes reports a production command (no sandbox
	// in its context) sent through a routed client that would reach the
	// databases of the router's range: SELECT, MOVE, COPY ... DB or
	// SWAPDB of one of them, FLUSHALL. Production would see the
	// sandboxes' keys, or flush their databases (freeing them while they
	// are in use, for two sandboxes to share). Nothing was sent.
	ErrProductionIntoSandboxes = errors.New("redisroute: production command reaches the sandboxes' databases")

	// ErrClosed reports a call on a closed [Router].
	ErrClosed = errors.New("redisroute: router closed")
)
