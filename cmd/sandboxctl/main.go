// Command sandboxctl creates, lists, extends and removes sandboxes and
// their service routes in the store the route tables of a fleet read: a
// route document in a file (routes.File) or one key per sandbox in etcd
// (routes/etcdroutes).
//
// Usage:
//
//	sandboxctl [-store SPEC] [-json] [-margin 5s] [-timeout 15s] COMMAND [ID] [flags]
//
//	create ID -actor A [-origin O] [-ttl 72h] [-database DSN] [-service name=upstream]...
//	route  ID -service name=upstream...      add or re-point routes of a sandbox
//	list
//	extend ID -ttl 24h                       expire ttl from now
//	remove ID [-service name]...             end the sandbox, or some routes
//	purge [-grace 1h]                        delete sandboxes removed longer ago
//
// SPEC is file:PATH or etcd://HOST:PORT[,HOST:PORT]/PREFIX/ (default
// $SANDBOXCTL_STORE).
//
// # One clock, a margin
//
// Every time sandboxctl writes comes from its own clock, plus -margin: a
// route becomes active (activeFrom) and stops (removedAt, and the
// sandbox's expiry on remove) margin after the command runs, never at the
// moment of the write. Every table that reads the store reads the same
// times, so every process (each HTTP hop, each Kafka reader comparing a
// message's timestamp) agrees on when a route started and ended, whenever
// it noticed the change; the margin gives the tables time to notice
// before the moment comes, and covers the skew between this clock and the
// clocks that stamp Kafka messages. Removal keeps the sandbox in the
// store, stamped, so that late readers still find its windows; purge
// deletes it once the grace (routes.DefaultTombstoneGrace) is over.
//
// # Output and exit status
//
// -json prints one JSON value per command, an error as {"error":
// message, "exit": status} (on stderr as text too). The exit status is 0 on
// success, 1 when the store fails, 2 for a usage error, 3 when the
// sandbox does not exist, 4 when create finds it exists already. A sandbox
// that was removed or expired stays listed until purge: route and extend
// exit 3 and create 4 on it, saying so; give a new sandbox another ID.
// A route removed with remove -service keeps its window for late readers
// for the tombstone grace (routes.DefaultTombstoneGrace): route exits 4
// on it until then. create prints the sandboxticket command that signs
// tickets for the sandbox.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

const dialTimeout = 5 * time.Second

// usageText is what -h prints before the global flags: the commands, as
// the package doc lists them.
const usageText = `Usage: sandboxctl [-store SPEC] [-json] [-margin 5s] [-timeout 15s] COMMAND [ID] [flags]

  create ID -actor A [-origin O] [-ttl 72h] [-database DSN] [-service name=upstream]...
  route  ID -service name=upstream...      add or re-point routes of a sandbox
  list
  extend ID -ttl 24h                       expire ttl from now
  remove ID [-service name]...             end the sandbox, or some routes
  purge [-grace 1h]                        delete sandboxes removed longer ago

SPEC is file:PATH or etcd://HOST:PORT[,HOST:PORT]/PREFIX/ (default $SANDBOXCTL_STORE).
Exit status: 0 done, 1 the store failed, 2 usage, 3 no such sandbox, 4 the sandbox exists.
sandboxctl COMMAND -h lists the flags of a command.

Flags:
`

// Exit statuses.
const (
	exitOK       = 0
	exitFailed   = 1
	exitUsage    = 2
	exitNotFound = 3
	exitExists   = 4
)

var (
	errUsage    = errors.New("usage")
	errNotFound = errors.New("no such sandbox")
	errExists   = errors.New("sandbox exists")
	// errKeep, from the function given to store.change, leaves the
	// sandbox as it is.
	errKeep = errors.New("keep")
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, time.Now, os.Stdout, os.Stderr))
}

// run runs sandboxctl with args and returns its exit status. An error
// goes to stderr, and with -json also to stdout as {"error": message,
// "exit": status}, so that a CI job reading stdout sees every outcome.
func run(ctx context.Context, args []string, getenv func(string) string, now func() time.Time, stdout, stderr io.Writer) int {
	var asJSON bool
	err := runErr(ctx, args, getenv, now, stdout, stderr, &asJSON)
	code := exitFailed
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		code = exitUsage
	case errors.Is(err, errNotFound):
		code = exitNotFound
	case errors.Is(err, errExists):
		code = exitExists
	}
	fmt.Fprintln(stderr, "sandboxctl:", err)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			Error string `json:"error"`
			Exit  int    `json:"exit"`
		}{err.Error(), code})
	}
	return code
}

type cli struct {
	store  store
	json   bool
	margin time.Duration
	now    time.Time
	out    io.Writer
	errOut io.Writer
}

func runErr(ctx context.Context, args []string, getenv func(string) string, now func() time.Time, stdout, stderr io.Writer, asJSON *bool) error {
	fs := flag.NewFlagSet("sandboxctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	spec := fs.String("store", getenv("SANDBOXCTL_STORE"), "file:PATH or etcd://host:port/prefix/ (default $SANDBOXCTL_STORE)")
	fs.BoolVar(asJSON, "json", false, "print JSON, errors included")
	margin := fs.Duration("margin", 5*time.Second, "how long after the command the routes it stamps start or stop")
	timeout := fs.Duration("timeout", 15*time.Second, "give up on a store that does not answer within this")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usage(err)
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("%w: want a command: create, route, list, extend, remove, purge", errUsage)
	}
	if *margin < 0 {
		return fmt.Errorf("%w: -margin must not be negative", errUsage)
	}
	if *timeout <= 0 {
		return fmt.Errorf("%w: -timeout must be positive", errUsage)
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	if *spec == "" {
		return fmt.Errorf("%w: -store or $SANDBOXCTL_STORE is required", errUsage)
	}
	st, err := openStore(*spec)
	if err != nil {
		return err
	}
	defer st.close()
	c := &cli{store: st, json: *asJSON, margin: *margin, now: now(), out: stdout, errOut: stderr}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	switch cmd {
	case "create":
		return c.create(ctx, rest)
	case "route":
		return c.route(ctx, rest)
	case "list":
		return c.list(ctx, rest)
	case "extend":
		return c.extend(ctx, rest)
	case "remove":
		return c.remove(ctx, rest)
	case "purge":
		return c.purge(ctx, rest)
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

func usage(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return fmt.Errorf("%w: %w", errUsage, err)
}

// services collects -service name=upstream flags.
type services map[string]string

func (s services) String() string { return fmt.Sprint(map[string]string(s)) }

func (s services) Set(v string) error {
	name, up, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("want name=upstream (upstream may be empty for a consumer-only route), got %q", v)
	}
	if _, dup := s[name]; dup {
		return fmt.Errorf("service %q given twice", name)
	}
	s[name] = up
	return nil
}

// names collects repeated -service name flags.
type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(v string) error { *n = append(*n, v); return nil }

func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.errOut)
	return fs
}

// parseNoArgs parses the flags of a command that takes no arguments.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usage(err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s: unexpected %q", errUsage, fs.Name(), fs.Arg(0))
	}
	return nil
}

// parseID parses the flags of a command that takes a sandbox ID first.
func parseID(fs *flag.FlagSet, args []string) (string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return "", fmt.Errorf("%w: %s: want a sandbox ID first", errUsage, fs.Name())
	}
	if err := fs.Parse(args[1:]); err != nil {
		return "", usage(err)
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("%w: %s: unexpected %q", errUsage, fs.Name(), fs.Arg(0))
	}
	if err := propagation.ValidateID(args[0]); err != nil {
		return "", fmt.Errorf("%w: %s: %w", errUsage, fs.Name(), err)
	}
	return args[0], nil
}

// at is the moment the command's stamps name.
func (c *cli) at() time.Time { return c.now.Add(c.margin).UTC().Truncate(time.Millisecond) }

// expiry is the expiry stamped for a lifetime of ttl from now. Stamps are
// truncated to the millisecond: a ttl less than a millisecond longer than
// the margin can stamp the very moment the routes start.
func (c *cli) expiry(ttl time.Duration) time.Time {
	return c.now.Add(ttl).UTC().Truncate(time.Millisecond)
}

func (c *cli) create(ctx context.Context, args []string) error {
	fs := c.flags("create")
	actor := fs.String("actor", "", "who the sandbox belongs to (required)")
	origin := fs.String("origin", "", "the pull request or dev session")
	ttl := fs.Duration("ttl", 72*time.Hour, "how long the sandbox lives")
	database := fs.String("database", "", "connection string of its test database")
	svcs := services{}
	fs.Var(svcs, "service", "name=upstream, repeatable")
	id, err := parseID(fs, args)
	if err != nil {
		return err
	}
	if *actor == "" {
		return fmt.Errorf("%w: create: -actor is required", errUsage)
	}
	at, expires := c.at(), c.expiry(*ttl)
	if !expires.After(at) {
		return fmt.Errorf("%w: create: -ttl %v must be longer than -margin %v (by a millisecond at least), or the sandbox expires before its routes start", errUsage, *ttl, c.margin)
	}
	sb := routes.Sandbox{
		ID: id, Actor: *actor, Origin: *origin, Database: *database,
		Expires: expires,
	}
	if len(svcs) > 0 {
		sb.Services = map[string]routes.Route{}
		for name, up := range svcs {
			sb.Services[name] = routes.Route{Upstream: up, ActiveFrom: at}
		}
	}
	if err := routes.Validate([]routes.Sandbox{sb}); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	err = c.store.change(ctx, id, func(cur routes.Sandbox, ok bool) (*routes.Sandbox, error) {
		if ok && c.gone(cur) {
			return nil, c.goneErr(errExists, cur)
		}
		if ok {
			return nil, fmt.Errorf("%w: %s (re-point its routes with route, extend it, or remove and purge it first)", errExists, id)
		}
		return &sb, nil
	})
	if err != nil {
		return err
	}
	ticket := ticketCommand(sb, min(*ttl, 24*time.Hour))
	if c.json {
		return c.print(struct {
			Sandbox       routes.Sandbox `json:"sandbox"`
			TicketCommand string         `json:"ticketCommand"`
		}{sb, ticket})
	}
	fmt.Fprintf(c.out, "created %s: routes active from %s, expires %s\n", id, at.Format(time.RFC3339Nano), sb.Expires.Format(time.RFC3339))
	fmt.Fprintf(c.out, "tickets: %s\n", ticket)
	return nil
}

// ticketCommand is the sandboxticket command line that signs a ticket
// for sb.
func ticketCommand(sb routes.Sandbox, ttl time.Duration) string {
	cmd := []string{"sandboxticket", "-id", sb.ID}
	if sb.Actor != "" {
		cmd = append(cmd, "-actor", shellQuote(sb.Actor))
	}
	if sb.Origin != "" {
		cmd = append(cmd, "-origin", shellQuote(sb.Origin))
	}
	return strings.Join(append(cmd, "-ttl", ttl.String()), " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (c *cli) route(ctx context.Context, args []string) error {
	fs := c.flags("route")
	svcs := services{}
	fs.Var(svcs, "service", "name=upstream, repeatable")
	id, err := parseID(fs, args)
	if err != nil {
		return err
	}
	if len(svcs) == 0 {
		return fmt.Errorf("%w: route: want at least one -service name=upstream", errUsage)
	}
	at := c.at()
	var out routes.Sandbox
	err = c.store.change(ctx, id, func(sb routes.Sandbox, ok bool) (*routes.Sandbox, error) {
		if ok && c.gone(sb) {
			return nil, c.goneErr(errNotFound, sb)
		}
		if !ok {
			return nil, fmt.Errorf("%w: %s", errNotFound, id)
		}
		sb.Services = clone(sb.Services)
		for name, up := range svcs {
			r, had := sb.Services[name]
			// A route holds one window: a new one would overwrite the
			// window of a route removed within the tombstone grace, which
			// the readers that lag still decide by.
			if had && !r.RemovedAt.IsZero() && c.now.Before(r.RemovedAt.Add(routes.DefaultTombstoneGrace)) {
				return nil, fmt.Errorf("%w: %s: the route of %s was removed at %s, and its window stays for late readers until %s (the tombstone grace, %v): route it again then, or give a new sandbox another ID, such as %s-2",
					errExists, id, name, r.RemovedAt.Format(time.RFC3339Nano), r.RemovedAt.Add(routes.DefaultTombstoneGrace).Format(time.RFC3339), routes.DefaultTombstoneGrace, id)
			}
			if !had || !r.RemovedAt.IsZero() {
				// A new route, or one that ended: it starts anew.
				r = routes.Route{ActiveFrom: at}
			}
			r.Upstream = up
			sb.Services[name] = r
		}
		if err := routes.Validate([]routes.Sandbox{sb}); err != nil {
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		out = sb
		return &sb, nil
	})
	if err != nil {
		return err
	}
	return c.report("routed", out)
}

func (c *cli) list(ctx context.Context, args []string) error {
	fs := c.flags("list")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	sbs, err := c.store.list(ctx)
	if err != nil {
		return err
	}
	slices.SortFunc(sbs, func(a, b routes.Sandbox) int { return strings.Compare(a.ID, b.ID) })
	if c.json {
		if sbs == nil {
			sbs = []routes.Sandbox{}
		}
		return c.print(sbs)
	}
	for _, sb := range sbs {
		state := "active"
		if c.gone(sb) {
			state = "removed"
		}
		fmt.Fprintf(c.out, "%s\t%s\t%s\texpires %s\t%s\n", sb.ID, state, sb.Actor, sb.Expires.Format(time.RFC3339), routeList(sb))
	}
	return nil
}

func routeList(sb routes.Sandbox) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(sb.Services)) {
		r := sb.Services[name]
		p := name + "=" + r.Upstream
		if !r.RemovedAt.IsZero() {
			p += " (removed " + r.RemovedAt.Format(time.RFC3339) + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

func (c *cli) extend(ctx context.Context, args []string) error {
	fs := c.flags("extend")
	ttl := fs.Duration("ttl", 24*time.Hour, "new lifetime, from now")
	id, err := parseID(fs, args)
	if err != nil {
		return err
	}
	expires := c.expiry(*ttl)
	if !expires.After(c.at()) {
		return fmt.Errorf("%w: extend: -ttl %v must be longer than -margin %v (by a millisecond at least): a sandbox ends margin after the command at the earliest (use remove)", errUsage, *ttl, c.margin)
	}
	var out routes.Sandbox
	err = c.store.change(ctx, id, func(sb routes.Sandbox, ok bool) (*routes.Sandbox, error) {
		if ok && c.gone(sb) {
			return nil, c.goneErr(errNotFound, sb)
		}
		if !ok {
			return nil, fmt.Errorf("%w: %s", errNotFound, id)
		}
		sb.Expires = expires
		out = sb
		return &sb, nil
	})
	if err != nil {
		return err
	}
	return c.report("extended", out)
}

func (c *cli) remove(ctx context.Context, args []string) error {
	fs := c.flags("remove")
	var only names
	fs.Var(&only, "service", "remove only this route, repeatable")
	id, err := parseID(fs, args)
	if err != nil {
		return err
	}
	at := c.at()
	var out routes.Sandbox
	err = c.store.change(ctx, id, func(sb routes.Sandbox, ok bool) (*routes.Sandbox, error) {
		if !ok {
			return nil, fmt.Errorf("%w: %s", errNotFound, id)
		}
		sb.Services = clone(sb.Services)
		for _, name := range only {
			if _, ok := sb.Services[name]; !ok {
				return nil, fmt.Errorf("%w: %s has no route for %s", errNotFound, id, name)
			}
		}
		for name, r := range sb.Services {
			if len(only) > 0 && !slices.Contains(only, name) {
				continue
			}
			if r.RemovedAt.IsZero() || r.RemovedAt.After(at) {
				r.RemovedAt = at
				if r.ActiveFrom.After(at) {
					r.ActiveFrom = at // never active: an empty window
				}
				sb.Services[name] = r
			}
		}
		if len(only) == 0 && (sb.Expires.IsZero() || sb.Expires.After(at)) {
			sb.Expires = at
		}
		out = sb
		return &sb, nil
	})
	if err != nil {
		return err
	}
	return c.report("removed", out)
}

func (c *cli) purge(ctx context.Context, args []string) error {
	fs := c.flags("purge")
	grace := fs.Duration("grace", routes.DefaultTombstoneGrace, "keep removed sandboxes this long, for readers that lag")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	// A negative grace would move the cutoff into the future and purge
	// live sandboxes, with no tombstone left for the readers.
	if *grace < 0 {
		return fmt.Errorf("%w: purge: -grace %v must not be negative", errUsage, *grace)
	}
	sbs, err := c.store.list(ctx)
	if err != nil {
		return err
	}
	cutoff := c.now.Add(-*grace)
	purged := []string{}
	for _, sb := range sbs {
		if sb.Expires.IsZero() || sb.Expires.After(cutoff) {
			continue
		}
		var did bool // by the last try: the etcd store may try again
		err := c.store.change(ctx, sb.ID, func(cur routes.Sandbox, ok bool) (*routes.Sandbox, error) {
			did = ok && !cur.Expires.IsZero() && !cur.Expires.After(cutoff)
			if !did {
				return nil, errKeep // purged or changed meanwhile
			}
			return nil, nil
		})
		if err != nil {
			return err
		}
		if did {
			purged = append(purged, sb.ID)
		}
	}
	if c.json {
		return c.print(struct {
			Purged []string `json:"purged"`
		}{purged})
	}
	for _, id := range purged {
		fmt.Fprintln(c.out, "purged", id)
	}
	return nil
}

// gone reports whether sb has expired by the time the command's stamps
// name: a sandbox removed less than a margin ago is gone already, and
// extending it or routing it anew would revive a sandbox whose routes
// have ended.
func (c *cli) gone(sb routes.Sandbox) bool {
	return !sb.Expires.IsZero() && !sb.Expires.After(c.at())
}

// goneErr is the error of a command that finds sb removed or expired but
// not purged: list still shows it, so the error says why it cannot be
// used, and what to do instead.
func (c *cli) goneErr(kind error, sb routes.Sandbox) error {
	return fmt.Errorf("%w: %s was removed or expired (it ends %s) and stays listed until purge deletes it, %v later by default: give a new sandbox another ID, such as %s-2",
		kind, sb.ID, sb.Expires.Format(time.RFC3339Nano), routes.DefaultTombstoneGrace, sb.ID)
}

func (c *cli) report(verb string, sb routes.Sandbox) error {
	if c.json {
		return c.print(sb)
	}
	fmt.Fprintf(c.out, "%s %s: expires %s, %s\n", verb, sb.ID, sb.Expires.Format(time.RFC3339Nano), routeList(sb))
	return nil
}

func (c *cli) print(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func clone(m map[string]routes.Route) map[string]routes.Route {
	if m == nil {
		return map[string]routes.Route{}
	}
	return maps.Clone(m)
}
