package redisroute

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// Guard makes client refuse sandbox contexts: every command, pipeline and
// transaction sent with a sandbox in its context fails with an error
// wrapping [ErrSandboxOnBaseline] before anything is written, and so does
// a new connection dialled with one (a pub/sub subscription; but
// client.Subscribe drops that error, and the PubSub's Channel() dials
// again with context.TODO() and subscribes: see the package doc). Commands
// without a sandbox run as before, at the cost of one context lookup.
//
// Use it on a baseline client that no [Router] routes: a client of another
// server, or one that sandbox traffic must never reach. A client given to
// [New] needs no guard: the router sends its sandbox traffic elsewhere.
// Hooks added to client after Guard run inside the guard: they never see a
// refused command.
//
// With [WithLogger], each refusal is one audit record (rejected, protocol
// redis). Errors wrap [ErrConfig]: a nil client, a nil option value, a
// client whose Options.AutoPipelineOptions sets FullDuplex or whose cached
// AutoPipeliner runs full duplex (its writes cannot be refused: see
// [ErrLeaked]), a closed client. Like [New], Guard pins the client's two
// cached AutoPipeliners to half duplex.
//
// A WithTimeout clone of client has none of its hooks (go-redis 9.23):
// guard it too, Guard(client.WithTimeout(d)).
func Guard(client *redis.Client, opts ...GuardOption) error {
	if client == nil {
		return fmt.Errorf("%w: redisroute: Guard: nil client", ErrConfig)
	}
	cfg := newGuardConfig(opts)
	if cfg.err != nil {
		return cfg.err
	}
	if baseCmdType == nil {
		return errCommandContexts("Guard")
	}
	if fullDuplexConfigured(client.Options()) {
		return errFullDuplex("Guard")
	}
	if err := pinHalfDuplex(client, "Guard"); err != nil {
		return err
	}
	client.AddHook(guardHook{logger: cfg.logger})
	return nil
}

type guardHook struct{ logger *slog.Logger }

func (g guardHook) refuse(ctx context.Context, s propagation.Sandbox, what string) error {
	err := fmt.Errorf("%w: sandbox %q: %s (the baseline client only serves production traffic)", ErrSandboxOnBaseline, s.ID, what)
	reject(ctx, g.logger, s, err)
	return err
}

func (g guardHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if s, ok := propagation.FromContext(ctx); ok {
			return nil, g.refuse(ctx, s, "new connection")
		}
		return next(ctx, network, addr)
	}
}

func (g guardHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		s, ok := propagation.FromContext(ctx)
		if !ok {
			s, ok = cmdSandbox(cmd) // built with a sandbox's context
		}
		if ok {
			var err error
			if fd, fdErr := fullDuplex(ctx, cmd, s.ID, next); fd {
				err = fmt.Errorf("%w: %w", ErrSandboxOnBaseline, fdErr)
				reject(ctx, g.logger, s, err)
			} else {
				err = g.refuse(ctx, s, cmd.Name())
			}
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (g guardHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if s, ok := propagation.FromContext(ctx); ok {
			err := g.refuse(ctx, s, "pipeline")
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		// An AutoPipeliner's batch, or a pipeline Exec'd with another
		// context than its commands were built with.
		prod := splitProduction(cmds, func(s propagation.Sandbox) error {
			return g.refuse(ctx, s, "command built with a sandbox's context, in a production pipeline")
		})
		if len(prod) == len(cmds) {
			return next(ctx, cmds)
		}
		if len(prod) == 0 {
			return cmds[0].Err()
		}
		return next(ctx, prod)
	}
}
