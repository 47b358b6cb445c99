package provision

import (
	"fmt"
	"time"

	"github.com/sandboxkit/sandboxkit/dbroute"
)

// Defaults.
const (
	// DefaultPrefix starts the name of every database and schema the
	// provisioners create.
	DefaultPrefix = "sbx_"
	// MaxPrefixLen is the longest prefix [WithPrefix] accepts.
	MaxPrefixLen = 24
	// DefaultReapGrace is how old a test database must be before Reap
	// may drop it.
	DefaultReapGrace = 10 * time.Minute
)

// ProvisionerOption configures a provisioner ([NewDatabasePerSandbox],
// [NewSchemaPerSandbox]). The options of a [dbroute.Router]
// ([dbroute.RouterOption]) are of another type: giving one to a
// provisioner does not compile. A nil option is skipped.
type ProvisionerOption interface {
	applyProvisioner(*config)
}

type optionFunc func(*config)

func (f optionFunc) applyProvisioner(c *config) { f(c) }

type config struct {
	prefix    string
	reapGrace time.Duration
	now       func() time.Time  // tests: the clock that dates markers and judges the grace
	step      func(step string) // tests: called after each provisioning step
}

// newConfig applies opts over the defaults, and checks the result: the
// errors wrap [dbroute.ErrConfig].
func newConfig(opts []ProvisionerOption) (config, error) {
	c := config{prefix: DefaultPrefix, reapGrace: DefaultReapGrace, now: time.Now}
	for _, o := range opts {
		if o != nil {
			o.applyProvisioner(&c)
		}
	}
	if err := validatePrefix(c.prefix); err != nil {
		return c, err
	}
	if c.reapGrace < 0 {
		return c, fmt.Errorf("provision: WithReapGrace(%v): must not be negative: %w", c.reapGrace, dbroute.ErrConfig)
	}
	if c.now == nil {
		return c, fmt.Errorf("provision: nil clock: %w", dbroute.ErrConfig)
	}
	return c, nil
}

// WithPrefix sets the prefix of every database and schema a provisioner
// creates (default [DefaultPrefix]): lower-case letters, digits and '_',
// starting with a letter, at most [MaxPrefixLen] bytes. Provisioners only
// ever drop objects whose names start with it and that carry their marker
// comment.
func WithPrefix(p string) ProvisionerOption {
	return optionFunc(func(c *config) { c.prefix = p })
}

// WithReapGrace sets how old a test database or schema must be before
// Reap drops it (default [DefaultReapGrace]). It covers route tables that
// lag behind one another: a process that has not yet seen a new sandbox
// must not drop the database another process just made for it. An age
// is the reaping process's clock at its route table's last good load
// minus the creation time in the object's marker, which the creating
// process's clock wrote: the grace must also cover the skew between
// the two clocks (a creator whose clock runs behind makes its objects
// look older to a reaper elsewhere).
func WithReapGrace(d time.Duration) ProvisionerOption {
	return optionFunc(func(c *config) { c.reapGrace = d })
}
