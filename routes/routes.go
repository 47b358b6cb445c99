package routes

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// ErrInvalid reports a route document or update with an invalid entry. The
// returned error wraps it and names the entry.
var ErrInvalid = errors.New("routes: invalid route table")

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

// UnmarshalJSON accepts a route as an upstream string or as an object.
func (r *Route) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*r = Route{Upstream: s}
		return nil
	}
	type plain Route
	var p plain
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return err
	}
	*r = Route(p)
	return nil
}

// ParseDocument parses and validates a JSON route document. Unknown fields
// are errors, so a typo does not silently drop a route.
func ParseDocument(b []byte) ([]Sandbox, error) {
	var doc Document
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the document", ErrInvalid)
	}
	if err := Validate(doc.Sandboxes); err != nil {
		return nil, err
	}
	return doc.Sandboxes, nil
}

// Validate checks a set of sandboxes and returns an error naming the first
// invalid entry.
func Validate(sbs []Sandbox) error {
	seen := make(map[string]bool, len(sbs))
	for i, sb := range sbs {
		if err := (propagation.Sandbox{ID: sb.ID, Actor: sb.Actor, Origin: sb.Origin}).Validate(); err != nil {
			return fmt.Errorf("%w: sandbox #%d %q: %v", ErrInvalid, i, sb.ID, err)
		}
		if seen[sb.ID] {
			return fmt.Errorf("%w: sandbox %q appears twice", ErrInvalid, sb.ID)
		}
		seen[sb.ID] = true
		if sb.Database != "" {
			if _, err := url.Parse(sb.Database); err != nil {
				return fmt.Errorf("%w: sandbox %q: database: %v", ErrInvalid, sb.ID, err)
			}
		}
		if b := sb.Budget; b != nil && (b.Rate < 0 || b.Burst < 0 || b.MaxInFlight < 0) {
			return fmt.Errorf("%w: sandbox %q: budget values must not be negative", ErrInvalid, sb.ID)
		}
		for svc, r := range sb.Services {
			if !validService(svc) {
				return fmt.Errorf("%w: sandbox %q: service name %q: want letters, digits, '.', '_' or '-'", ErrInvalid, sb.ID, svc)
			}
			if r.Upstream == "" {
				continue // the sandbox overrides the service's consumers only
			}
			if err := ValidateUpstream(r.Upstream); err != nil {
				return fmt.Errorf("%w: sandbox %q service %q: %v", ErrInvalid, sb.ID, svc, err)
			}
			if !r.RemovedAt.IsZero() && !r.ActiveFrom.IsZero() && r.RemovedAt.Before(r.ActiveFrom) {
				return fmt.Errorf("%w: sandbox %q service %q: removedAt before activeFrom", ErrInvalid, sb.ID, svc)
			}
		}
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

// ValidateUpstream checks an upstream address: "http://host:port",
// "https://host:port" (no path, query or user info) or "host:port".
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
		return nil
	}
	host, port, err := net.SplitHostPort(u)
	if err != nil {
		return fmt.Errorf("upstream %q: want host:port or an http(s) URL: %v", u, err)
	}
	if host == "" {
		return fmt.Errorf("upstream %q: empty host", u)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("upstream %q: bad port", u)
	}
	return nil
}
