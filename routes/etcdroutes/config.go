package etcdroutes

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// ErrConfig reports a [New] call that cannot work. Errors from New wrap it
// and name the argument or option.
var ErrConfig = errors.New("etcdroutes: invalid configuration")

// Defaults of the options.
const (
	DefaultProgressEvery = 500 * time.Millisecond
	DefaultTimeout       = 5 * time.Second
	DefaultMaxBackoff    = 30 * time.Second
	DefaultJitter        = 0.2
)

// Option configures a [Source].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	every      time.Duration
	timeout    time.Duration
	maxBackoff time.Duration
	jitter     float64
	onError    func(error)
	byReading  bool
	now        func() time.Time
	rand       func() float64
}

// ProgressEvery sets how often Sync proves that the table reflects the
// store (default [DefaultProgressEvery]): [routes.Table.SyncedAt] trails
// the present by about this much plus a round trip to etcd. Each proof is
// one linearizable read and one progress request per table.
func ProgressEvery(d time.Duration) Option {
	return optionFunc(func(c *config) { c.every = d })
}

// Timeout bounds every read from etcd, and the time the watch may take to
// catch up with a proof (default [DefaultTimeout]). Past it, the attempt
// counts as a failure and [routes.Table.Err] reports it.
func Timeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.timeout = d })
}

// MaxBackoff caps the wait before starting over after a failure, which
// doubles from [ProgressEvery] (default [DefaultMaxBackoff]).
func MaxBackoff(d time.Duration) Option {
	return optionFunc(func(c *config) { c.maxBackoff = d })
}

// Jitter spreads the waits: each is drawn uniformly from [1-f, 1+f] times
// itself, so that a fleet started together does not hit etcd in lockstep.
// f is in [0, 1); the default is [DefaultJitter], 0 turns jitter off.
func Jitter(f float64) Option {
	return optionFunc(func(c *config) { c.jitter = f })
}

// OnError is called with every failure Sync reports to the table.
func OnError(f func(error)) Option {
	return optionFunc(func(c *config) { c.onError = f })
}

// ProveByReading makes Sync prove that a quiet watch has caught up by
// reading, at the current revision, how many keys the prefix holds and
// which of them changed since the last revision the watch delivered,
// instead of asking for a progress notification. Such a read costs the
// store a pass over the prefix's keys, where a progress request costs
// nothing. Without this option each session proves by reading until every
// endpoint of the client has said it runs an etcd whose notifications can
// be trusted ([ProgressNotifyTrusted]: 3.4.38, 3.5.22, 3.6.2 or later),
// and for good where one runs an older etcd; while an endpoint does not
// answer, it asks again every [MaxBackoff]. Use the option where a proxy
// between the client and etcd (such as the gRPC proxy) hides the
// servers' versions or notifications.
func ProveByReading() Option {
	return optionFunc(func(c *config) { c.byReading = true })
}

func newConfig(opts []Option) (config, error) {
	c := config{
		every:      DefaultProgressEvery,
		timeout:    DefaultTimeout,
		maxBackoff: DefaultMaxBackoff,
		jitter:     DefaultJitter,
		now:        time.Now,
		rand:       rand.Float64,
	}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	switch {
	case c.every <= 0:
		return c, fmt.Errorf("%w: ProgressEvery: %v must be positive", ErrConfig, c.every)
	case c.timeout <= 0:
		return c, fmt.Errorf("%w: Timeout: %v must be positive", ErrConfig, c.timeout)
	case c.maxBackoff < 0:
		return c, fmt.Errorf("%w: MaxBackoff: %v must not be negative", ErrConfig, c.maxBackoff)
	case !(c.jitter >= 0 && c.jitter < 1):
		return c, fmt.Errorf("%w: Jitter: %v must be in [0, 1)", ErrConfig, c.jitter)
	}
	c.maxBackoff = max(c.maxBackoff, c.every)
	return c, nil
}

// spread returns d jittered.
func (c *config) spread(d time.Duration) time.Duration {
	if c.jitter == 0 {
		return d
	}
	return time.Duration(float64(d) * (1 + c.jitter*(2*c.rand()-1)))
}
