package provision

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/singleflight"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Provisioned is a test database or schema a provisioner created.
type Provisioned struct {
	// ID is the sandbox it belongs to.
	ID string
	// Name is the database or schema name.
	Name string
	// Created is when it was created, from its marker comment (to the
	// second, by the creating process's clock); zero when Incomplete
	// and unmarked.
	Created time.Time
	// Incomplete reports a database whose creation was interrupted (see
	// [DatabasePerSandbox]): ID is empty when it cannot be told from the
	// name. The next request for the sandbox finishes it; Destroy and
	// Reap drop it.
	Incomplete bool
}

// Migration builds the schema of a test database.
type Migration struct {
	// Version names the schema Apply builds. [DatabasePerSandbox] rebuilds
	// its template when the version recorded in the template differs, so
	// change it whenever Apply changes.
	Version string
	// Apply creates the tables and seed data. It runs inside a transaction
	// (tx) that also creates the template or schema, so a failure leaves
	// nothing behind; it must not commit that transaction. For
	// [SchemaPerSandbox] the search_path is the sandbox's schema: create
	// objects with unqualified names. A nil Apply leaves the database
	// empty.
	Apply func(ctx context.Context, tx pgx.Tx) error
}

func (m Migration) apply(ctx context.Context, tx pgx.Tx) error {
	if m.Apply == nil {
		return nil
	}
	if err := m.Apply(ctx, tx); err != nil {
		return fmt.Errorf("provision: migration %q: %w", m.Version, err)
	}
	return nil
}

// The skeleton shared by every provisioner: names, ownership markers, the
// recoverable steps of a creation, listing, dropping and reaping. What is
// particular to a kind of object on a kind of server (a database or a
// schema on PostgreSQL; a database on MySQL next) is a store: how to lock a
// name, read an object's state, create, mark, finish, drop and list.

// object is a database or schema as its server describes it.
type object struct {
	name    string
	exists  bool
	comment string // the marker comment, "" when there is none
	// incomplete: the object carries the creation mark, set by the
	// statement that created it and removed by finish. Only stores whose
	// creation takes several transactions have it.
	incomplete bool
	// dropping: a DROP of the object was interrupted, leaving it unusable
	// (PostgreSQL 15.4 and later mark such a database invalid): it can
	// only be dropped. Only stores whose drop can be cut short have it.
	dropping bool
}

// store is the dialect-specific part of a provisioner.
type store interface {
	// locked runs f in a session that holds the exclusive lock of name on
	// the server (and, with creating, whatever the store needs to create
	// it, such as a shared lock on its template). The lock serialises
	// every process working on the name.
	locked(ctx context.Context, name string, creating bool, f func(session) error) error
	// list returns the objects whose names start with prefix (not the
	// store's own, such as a template).
	list(ctx context.Context, prefix string) ([]object, error)
	// transient reports whether err says the server could not be reached
	// now, or an object is busy, rather than that it refused the work.
	transient(err error) bool
}

// session is a connection holding the lock of one name (see store.locked).
type session interface {
	// state reads the object called name.
	state(ctx context.Context, name string) (object, error)
	// create creates the object name of sandbox id, marked as the
	// library's by something that commits with the creation: either
	// complete with marker (one transaction), or incomplete. It returns
	// the object's state afterwards. An error wrapping errLostRace
	// reports that another process created it first.
	create(ctx context.Context, id, name, marker string) (object, error)
	// mark sets the marker comment of an incomplete object.
	mark(ctx context.Context, name, marker string) error
	// finish removes the creation mark, opening the object for use.
	finish(ctx context.Context, name string) error
	// drop drops the object.
	drop(ctx context.Context, name string) error
}

// errLostRace reports a creation that found the name taken by a process
// that does not take the provisioners' locks (or took them in another
// order): the state is read again, and the object used if it is ours.
var errLostRace = errors.New("created by another process first")

// provisioner is the skeleton every provisioner embeds.
type provisioner struct {
	cfg     config
	kind    string // "database" or "schema", in errors
	store   store
	flights singleflight.Group

	mu       sync.Mutex
	onRemove []func(id string)
}

// Name returns the name of sandbox id's database or schema: the prefix
// followed by the ID with '-' replaced by '_' when that fits in 62 bytes;
// otherwise 63 bytes ending in '_' and 16 hex digits of the ID's SHA-256
// (see the package documentation).
func (p *provisioner) Name(id string) (string, error) {
	if err := propagation.ValidateID(id); err != nil {
		return "", err
	}
	return objectName(p.cfg.prefix, id), nil
}

// Lookup implements [dbroute.Provider]: every valid sandbox ID has a test
// database (created by Open), so the key is always "".
func (p *provisioner) Lookup(id string) (string, error) {
	if err := propagation.ValidateID(id); err != nil {
		return "", fmt.Errorf("%w: %w", dbroute.ErrNoTestDatabase, err)
	}
	return "", nil
}

// OnRemove implements [dbroute.Reclaimer]: f is called with a sandbox's ID
// before Destroy or Reap removes its test database. [dbroute.New]
// registers its router, which closes the sandbox's pool.
func (p *provisioner) OnRemove(f func(id string)) {
	if f == nil {
		return
	}
	p.mu.Lock()
	p.onRemove = append(p.onRemove, f)
	p.mu.Unlock()
}

func (p *provisioner) removing(id string) {
	p.mu.Lock()
	fs := slices.Clone(p.onRemove)
	p.mu.Unlock()
	for _, f := range fs {
		f(id)
	}
}

// ensure makes sure sandbox id's object exists, once at a time in this
// process however many ask, with create (the skeleton's create, or a
// store's wrapper around it), and returns its name. The error is
// classified (see [dbroute.ErrNoTestDatabase]).
func (p *provisioner) ensure(ctx context.Context, id string, create func(ctx context.Context, id, name string) error) (string, error) {
	name, err := p.Name(id)
	if err != nil {
		return "", fmt.Errorf("%w: %w", dbroute.ErrNoTestDatabase, err)
	}
	for {
		led := false
		_, err, _ = p.flights.Do(name, func() (any, error) { led = true; return nil, create(ctx, id, name) })
		// A creation runs under the context of the request that started
		// it: when that request gave up, the others that joined it try
		// again rather than fail with its cancellation.
		if led || err == nil || ctx.Err() != nil || !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			break
		}
	}
	if err != nil {
		return "", p.classify(id, err)
	}
	return name, nil
}

// create makes sure sandbox id's object exists and is finished. The steps,
// each recoverable:
//
//  1. create, marked as ours by what commits with the creation;
//  2. the marker comment (with 1 for stores that create in one
//     transaction);
//  3. finish: the creation mark removed.
//
// An object found after step 1 or 2 is finished from where it stopped; an
// object of the name that is not ours is refused with [dbroute.ErrNotOwned].
func (p *provisioner) create(ctx context.Context, id, name string) error {
	for attempt := 0; ; attempt++ {
		err := p.store.locked(ctx, name, true, func(s session) error {
			o, err := s.state(ctx, name)
			if err != nil {
				return err
			}
			marker := sandboxMarker(id, p.cfg.now())
			if o.dropping {
				// Destroy or Reap was cut short: its data is gone
				// already. Finish the drop if it is ours, then create.
				if err := p.checkOwner(id, name, o.comment); err != nil {
					return err
				}
				if err := s.drop(ctx, name); err != nil {
					return fmt.Errorf("finishing the interrupted drop of %s %s: %w", p.kind, name, err)
				}
				o = object{name: name}
			}
			if !o.exists {
				if o, err = s.create(ctx, id, name, marker); err != nil {
					return err
				}
			}
			if !o.incomplete {
				return p.checkOwner(id, name, o.comment)
			}
			if o.comment == "" {
				if err := s.mark(ctx, name, marker); err != nil {
					return fmt.Errorf("marking %s %s: %w", p.kind, name, err)
				}
				p.step("commented")
				o.comment = marker
			}
			if err := p.checkOwner(id, name, o.comment); err != nil {
				return err
			}
			if err := s.finish(ctx, name); err != nil {
				return fmt.Errorf("opening %s %s: %w", p.kind, name, err)
			}
			p.step("opened")
			return nil
		})
		if attempt == 0 && errors.Is(err, errLostRace) {
			continue // look again: use it if it is ours
		}
		return err
	}
}

// step reports to the tests that a provisioning step is done.
func (p *provisioner) step(name string) {
	if p.cfg.step != nil && name != "" {
		p.cfg.step(name)
	}
}

func (p *provisioner) checkOwner(id, name, text string) error {
	if got, _, ok := owner(p.cfg.prefix, name, text); ok && got == id {
		return nil
	}
	return fmt.Errorf("%w: %s %s exists but is not the test %s of sandbox %q (comment %q); drop it by hand or use another prefix", dbroute.ErrNotOwned, p.kind, name, p.kind, id, text)
}

// Provisioned lists the test databases or schemas this provisioner
// created (name prefix and marker both match), sorted by sandbox ID,
// including those whose creation was interrupted (Incomplete).
func (p *provisioner) Provisioned(ctx context.Context) ([]Provisioned, error) {
	objs, err := p.store.list(ctx, p.cfg.prefix)
	if err != nil {
		return nil, fmt.Errorf("provision: listing test %ss: %w", p.kind, p.unavailable(err))
	}
	var out []Provisioned
	for _, o := range objs {
		id, created, ok := owner(p.cfg.prefix, o.name, o.comment)
		switch {
		case o.incomplete && (ok || o.comment == "" && producible(p.cfg.prefix, o.name)):
			if !ok {
				id = idOf(p.cfg.prefix, o.name)
			}
			out = append(out, Provisioned{ID: id, Name: o.name, Created: created, Incomplete: true})
		case ok:
			out = append(out, Provisioned{ID: id, Name: o.name, Created: created})
		}
	}
	slices.SortFunc(out, func(a, b Provisioned) int { return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Name, b.Name)) })
	return out, nil
}

// Destroy removes sandbox id's test database or schema, which must have
// been created by the provisioner — also one whose creation was
// interrupted. It returns nil when there is none, an error wrapping
// [dbroute.ErrNotOwned] when an object of that name exists that the
// provisioner did not create, and one wrapping [dbroute.ErrUnavailable]
// when the server cannot be reached (as do Reap and Provisioned). The router's pool of the sandbox is closed
// first (see OnRemove); queries of the sandbox still running fail, and a
// later request creates a fresh test database.
func (p *provisioner) Destroy(ctx context.Context, id string) error {
	name, err := p.Name(id)
	if err != nil {
		return fmt.Errorf("provision: Destroy: %w", err)
	}
	p.removing(id)
	err = p.drop(ctx, name, func(o object) error {
		if o.incomplete && o.comment == "" {
			return nil
		}
		return p.checkOwner(id, name, o.comment)
	})
	if err != nil {
		return fmt.Errorf("provision: Destroy %q: %w", id, p.unavailable(err))
	}
	return nil
}

// drop drops the object called name under its lock if it exists and mine
// approves of its state.
func (p *provisioner) drop(ctx context.Context, name string, mine func(object) error) error {
	return p.store.locked(ctx, name, false, func(s session) error {
		o, err := s.state(ctx, name)
		if err != nil || !o.exists {
			return err
		}
		if err := mine(o); err != nil {
			return err
		}
		return s.drop(ctx, name)
	})
}

var errKeep = errors.New("keep")

// dropIncomplete drops the object called name if its creation was
// interrupted and nobody is finishing it; it reports whether it dropped
// it.
func (p *provisioner) dropIncomplete(ctx context.Context, name string) (bool, error) {
	dropped := false
	err := p.drop(ctx, name, func(o object) error {
		if !o.incomplete {
			return errKeep
		}
		if _, _, ok := owner(p.cfg.prefix, name, o.comment); !ok && o.comment != "" {
			return errKeep
		}
		dropped = true
		return nil
	})
	if err == errKeep {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("provision: dropping interrupted creation %s: %w", name, p.unavailable(err))
	}
	return dropped, nil
}

// Reap drops the test databases (or schemas) the provisioner created for
// sandboxes that are not in table (expired or removed), once they are
// older than the reap grace ([WithReapGrace]) at the table's last good
// load ([routes.Table.SyncedAt]; a table whose source is failing does not
// know the sandboxes created since), and every database whose
// creation was interrupted and is not being finished by anyone (a live
// sandbox gets a fresh one on its next request). It returns the IDs of the
// sandboxes whose test databases it dropped, when known; objects the
// provisioner did not create are never touched. A table that has never
// loaded from its source ([routes.Table.SyncedAt] is zero) reaps nothing:
// Reap returns an error wrapping [dbroute.ErrUnavailable]. A router using the
// provisioner closes the pools of the sandboxes reaped (see OnRemove).
// Call it periodically, from one process or from all of them.
func (p *provisioner) Reap(ctx context.Context, table *routes.Table) ([]string, error) {
	if table == nil {
		return nil, fmt.Errorf("provision: Reap: nil route table: %w", dbroute.ErrConfig)
	}
	if table.SyncedAt().IsZero() {
		// An empty table that has not loaded yet says nothing about which
		// sandboxes are live: reaping by it would drop every one of them.
		return nil, fmt.Errorf("provision: Reap: the route table has never loaded from its source, so it cannot tell which sandboxes are live; nothing reaped: %w", dbroute.ErrUnavailable)
	}
	owned, err := p.Provisioned(ctx)
	if err != nil {
		return nil, err
	}
	live := make(map[string]bool)
	for _, sb := range table.Sandboxes() {
		live[sb.ID] = true
	}
	// A table is as old as its last good load: a sandbox created since
	// may be missing from it, so the age of a database is judged at that
	// load, not now.
	now := p.cfg.now()
	if synced := table.SyncedAt(); synced.Before(now) {
		now = synced
	}
	var dropped []string
	var errs []error
	for _, o := range owned {
		if o.Incomplete {
			gone, err := p.dropIncomplete(ctx, o.Name)
			if err != nil {
				errs = append(errs, err)
			} else if gone && o.ID != "" {
				p.removing(o.ID)
				dropped = append(dropped, o.ID)
			}
			continue
		}
		if live[o.ID] || now.Sub(o.Created) < p.cfg.reapGrace {
			continue
		}
		if _, ok := table.Sandbox(o.ID); ok {
			continue // it appeared since the list was taken
		}
		gone, err := p.dropExpired(ctx, o, now)
		if err != nil {
			errs = append(errs, err)
		} else if gone {
			dropped = append(dropped, o.ID)
		}
	}
	slices.Sort(dropped)
	return slices.Compact(dropped), errors.Join(errs...)
}

// dropExpired drops o, the finished object of a sandbox that left the
// route table, if under its lock it is still that sandbox's, finished and
// older than the grace at now: since it was listed, it may have been
// dropped and created afresh. It reports whether o is gone.
func (p *provisioner) dropExpired(ctx context.Context, o Provisioned, now time.Time) (bool, error) {
	p.removing(o.ID)
	err := p.drop(ctx, o.Name, func(cur object) error {
		if cur.incomplete && cur.comment == "" {
			return errKeep // a creation interrupted since: the next Reap drops it
		}
		if err := p.checkOwner(o.ID, o.Name, cur.comment); err != nil {
			return err
		}
		if _, created, _ := owner(p.cfg.prefix, o.Name, cur.comment); cur.incomplete || now.Sub(created) < p.cfg.reapGrace {
			return errKeep
		}
		return nil
	})
	if err == errKeep {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("provision: Reap %q: %w", o.ID, p.unavailable(err))
	}
	return true, nil
}

// unavailable makes err, a failure of Destroy, Reap or Provisioned, wrap
// [dbroute.ErrUnavailable] when the store says it is transient, so that a
// caller can tell "try later" from a refusal.
func (p *provisioner) unavailable(err error) error {
	if p.store.transient(err) && !errors.Is(err, dbroute.ErrUnavailable) {
		return fmt.Errorf("%w: %w", dbroute.ErrUnavailable, err)
	}
	return err
}

// classify makes a provisioning failure of sandbox id wrap exactly one
// class: [dbroute.ErrUnavailable] when the store says it is transient,
// else [dbroute.ErrNoTestDatabase].
func (p *provisioner) classify(id string, err error) error {
	if err == nil || errors.Is(err, dbroute.ErrNoTestDatabase) || errors.Is(err, dbroute.ErrUnavailable) {
		return err
	}
	class := dbroute.ErrNoTestDatabase
	if p.store.transient(err) {
		class = dbroute.ErrUnavailable
	}
	return fmt.Errorf("%w: sandbox %q: %w", class, id, err)
}
