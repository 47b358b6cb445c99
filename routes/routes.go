package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// ErrInvalid reports a route document or update with an invalid entry. The
// returned error wraps it and names the entry.
var ErrInvalid = errors.New("routes: invalid route table")

// ErrSandboxUnavailable reports a sandbox request whose route points at an
// upstream that cannot be reached, and that was not sent anywhere else.
// Every adapter that routes by this table (httpmw, grpcmw) returns errors
// wrapping this one value, which each re-exports under the same name, so
// one errors.Is check serves them all.
var ErrSandboxUnavailable = errors.New("sandboxkit: sandbox upstream unavailable")

// Document is the JSON route document.
type Document struct {
	Sandboxes []Sandbox `json:"sandboxes"`
}

// Sandbox is one sandbox of the route table.
type Sandbox struct {
	// ID is the sandbox ID, a DNS label.
	ID string `json:"id"`
	// Actor and Origin describe who the sandbox belongs to and what it was
	// made for.
	Actor  string `json:"actor,omitempty"`
	Origin string `json:"origin,omitempty"`
	// Expires, when set, is when the sandbox stops existing: lookups fail
	// and its routes count as removed from then on.
	Expires time.Time `json:"expires,omitzero"`
	// Database, when set, is the connection string of the sandbox's test
	// database.
	Database string `json:"database,omitempty"`
	// Budget, when set, overrides the default per-sandbox traffic budget.
	Budget *Budget `json:"budget,omitempty"`
	// Services maps a service name to the route of the sandboxed version.
	Services map[string]Route `json:"services,omitempty"`
}

// Budget overrides a sandbox's traffic budget. A zero field keeps the
// default.
type Budget struct {
	// Rate is the sustained request rate, per second.
	Rate float64 `json:"rate,omitempty"`
	// Burst is the token bucket size.
	Burst int `json:"burst,omitempty"`
	// MaxInFlight caps concurrent calls.
	MaxInFlight int `json:"maxInFlight,omitempty"`
}

// Route is where one service of a sandbox is served, and when.
type Route struct {
	// Upstream is "http://host:port", "https://host:port" or "host:port".
	// Empty means the sandbox overrides only the service's Kafka consumers
	// (a service that serves no requests): [Table.Lookup] reports no
	// upstream for it, [Table.ActiveAt] still reports the window.
	Upstream string `json:"upstream,omitempty"`
	// ActiveFrom is when the route became active. Zero in an update means
	// "when this table first sees it".
	ActiveFrom time.Time `json:"activeFrom,omitzero"`
	// RemovedAt, when set, is when the route stopped being active.
	RemovedAt time.Time `json:"removedAt,omitzero"`
}

// Validate checks a set of sandboxes and returns an error naming the first
// invalid entry by its JSON path in a document holding them
// ($.sandboxes[3].services.cart.upstream) and its sandbox ID. The error
// wraps [ErrInvalid] and, for an invalid ID, actor or origin,
// propagation's [propagation.ErrInvalidID], [propagation.ErrInvalidActor]
// or [propagation.ErrInvalidOrigin].
func Validate(sbs []Sandbox) error {
	first := make(map[string]int, len(sbs))
	for i := range sbs {
		if err := validateSandbox(i, &sbs[i]); err != nil {
			return err
		}
		if j, dup := first[sbs[i].ID]; dup {
			return errRepeated(i, j, sbs[i].ID)
		}
		first[sbs[i].ID] = i
	}
	return nil
}

// errRepeated reports sandbox id at index i, first seen at index j.
func errRepeated(i, j int, id string) error {
	return fmt.Errorf("%w: $.sandboxes[%d].id: sandbox %q appears twice (first at $.sandboxes[%d])", ErrInvalid, i, id, j)
}

// validateSandbox checks sb, the i-th sandbox of a document, on its own.
func validateSandbox(i int, sb *Sandbox) error {
	at := func(field string) string { return "$.sandboxes[" + strconv.Itoa(i) + "]" + field }
	if err := (propagation.Sandbox{ID: sb.ID, Actor: sb.Actor, Origin: sb.Origin}).Validate(); err != nil {
		if errors.Is(err, propagation.ErrInvalidID) {
			return fmt.Errorf("%w: %s: %w", ErrInvalid, at(".id"), err)
		}
		field := ".actor"
		if errors.Is(err, propagation.ErrInvalidOrigin) {
			field = ".origin"
		}
		return fmt.Errorf("%w: %s: sandbox %q: %w", ErrInvalid, at(field), sb.ID, err)
	}
	if sb.Database != "" {
		if _, err := url.Parse(sb.Database); err != nil {
			return fmt.Errorf("%w: %s: sandbox %q: %v", ErrInvalid, at(".database"), sb.ID, err)
		}
	}
	if b := sb.Budget; b != nil && (b.Rate < 0 || b.Burst < 0 || b.MaxInFlight < 0) {
		return fmt.Errorf("%w: %s: sandbox %q: budget values must not be negative", ErrInvalid, at(".budget"), sb.ID)
	}
	// The first bad service in name order, so the error does not depend on
	// map order.
	var (
		bad, msg string
		found    bool
	)
	for svc, r := range sb.Services {
		if found && svc > bad {
			continue
		}
		if m := checkRoute(svc, r); m != "" {
			bad, msg, found = svc, m, true
		}
	}
	if found {
		return fmt.Errorf("%w: %s: sandbox %q service %s: %s", ErrInvalid, at(".services"+servicePath(bad)), sb.ID, quoteClipped(bad), msg)
	}
	return nil
}

// checkRoute returns what is wrong with the route of service svc, or "".
func checkRoute(svc string, r Route) string {
	if !validService(svc) {
		return badService
	}
	if r.Upstream != "" {
		if err := ValidateUpstream(r.Upstream); err != nil {
			return err.Error()
		}
	}
	if !r.RemovedAt.IsZero() && !r.ActiveFrom.IsZero() && r.RemovedAt.Before(r.ActiveFrom) {
		return "removedAt before activeFrom"
	}
	return ""
}

// servicePath is the path element of a service key.
func servicePath(svc string) string {
	if plainKey(svc) {
		return "." + svc
	}
	return "[" + quoteClipped(svc) + "]"
}

const badService = "bad service name: want 1 to 253 letters, digits, '.', '_' or '-'"

// ValidateService checks a service name as a route table holds them: 1 to
// 253 letters, digits, '.', '_' or '-'. A name that fails it is in no
// table, so a middleware built for it would never route; the adapters'
// constructors refuse it.
func ValidateService(s string) error {
	if !validService(s) {
		return fmt.Errorf("service %s: %s", quoteClipped(s), badService)
	}
	return nil
}

func validService(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// upstreamHost reports whether host, of an upstream (a URL's unescaped), is one that
// every hop dials as written: an IPv6 address (with its zone) when it
// was in brackets, else a host name or IPv4 address: ASCII letters,
// digits, '-', '.' and '_', or bytes of non-ASCII letters (an
// internationalized name). httpmw puts it in a URL's host, where '/',
// '?', '#', '@' or '%' would end it or mean something else, and gRPC
// reads its target as a URL.
func upstreamHost(host string, bracketed bool) bool {
	if bracketed {
		// The zone, an interface name or number, alike: "[::1%#]"
		// parses, and gRPC read its target up to the '#'.
		a, err := netip.ParseAddr(host)
		return err == nil && a.Is6() && nameBytes(a.Zone())
	}
	return nameBytes(host)
}

// nameBytes reports whether s holds only bytes of a host name: ASCII
// letters, digits, '-', '.', '_', and the bytes of non-ASCII letters.
func nameBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || c == '-' || c == '.' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
			continue
		}
		return false
	}
	return true
}

// ValidateUpstream checks an upstream address: "http://host:port",
// "https://host:port" (no path, query or user info; the port may be left
// out) or "host:port", with a host that is not empty and a port from 1 to
// 65535 in decimal digits. The host of "host:port" is a host name, an
// IPv4 address or a bracketed IPv6 address (with its zone: [fe80::1%eth0]);
// the URL form writes the zone escaped, http://[fe80::1%25eth0]:80.
func ValidateUpstream(u string) error {
	if u == "" {
		return errors.New("empty upstream")
	}
	if scheme, _, ok := strings.Cut(u, "://"); ok {
		if scheme != "http" && scheme != "https" {
			return fmt.Errorf("upstream %q: scheme must be http or https", u)
		}
		pu, err := url.Parse(u)
		if err != nil {
			return fmt.Errorf("upstream %q: %v", u, err)
		}
		if pu.Host == "" || pu.User != nil || (pu.Path != "" && pu.Path != "/") || pu.RawQuery != "" || pu.Fragment != "" {
			return fmt.Errorf("upstream %q: want %s://host[:port] only", u, scheme)
		}
		// Go dials an empty host as this machine, and url.Parse takes
		// any digits, or none, for a port.
		if pu.Hostname() == "" {
			return fmt.Errorf("upstream %q: empty host", u)
		}
		if !upstreamHost(pu.Hostname(), strings.HasPrefix(pu.Host, "[")) {
			return fmt.Errorf("upstream %q: the host is neither a host name nor an IP address", u)
		}
		if strings.HasSuffix(pu.Host, ":") {
			return fmt.Errorf("upstream %q: bad port", u)
		}
		if port := pu.Port(); port != "" {
			if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
				return fmt.Errorf("upstream %q: bad port", u)
			}
		}
		return nil
	}
	host, port, err := net.SplitHostPort(u)
	if err != nil {
		return fmt.Errorf("upstream %q: want host:port or an http(s) URL: %v", u, err)
	}
	if host == "" {
		return fmt.Errorf("upstream %q: empty host", u)
	}
	if !upstreamHost(host, strings.HasPrefix(u, "[")) {
		return fmt.Errorf("upstream %q: the host is neither a host name nor an IP address", u)
	}
	// Digits alone, as in the URL form: strconv.Atoi takes "+80", which
	// net/url reads as no port (http.Transport then looks up the host
	// "h:+80").
	if strings.TrimLeft(port, "0123456789") != "" {
		return fmt.Errorf("upstream %q: bad port", u)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("upstream %q: bad port", u)
	}
	return nil
}
