package routes_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// FuzzParseDocument checks ParseDocument against encoding/json's own,
// lenient reading of the same bytes and against itself:
//
//   - it never panics, and every rejection wraps ErrInvalid;
//   - whatever it accepts is valid JSON with no object holding a key twice
//     (found here by a walker of its own);
//   - whatever it accepts, json.Unmarshal into plain types with the same
//     tags (case-insensitive, last duplicate wins, null ignored) reads as
//     the same table: no other Go parser of the bytes sees other routes;
//   - what it accepts marshals back to a document it reads as the same.
func FuzzParseDocument(f *testing.F) {
	for _, tt := range strictCases {
		f.Add([]byte(tt.doc))
	}
	example, err := os.ReadFile("testdata/example.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte(`{"sandboxes":[{"id":"a","actor":"al\u00efce","expires":"2026-12-01T18:00:00.5+01:00","database":"postgres://x/y",` +
		`"budget":{"rate":0.5,"burst":2,"maxInFlight":3},"services":{"cart":"h:1","b":{},"c":{"upstream":"http://h:2","activeFrom":"2026-11-27T09:00:00Z","removedAt":"2026-11-28T09:00:00Z"}}},{"id":"b"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sbs, err := routes.ParseDocument(b)
		if err != nil {
			if !errors.Is(err, routes.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if !json.Valid(b) {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		if dup := duplicateKey(b); dup != "" {
			t.Fatalf("accepted %q, which repeats key %q", b, dup)
		}
		lenient, err := lenientParse(b)
		if err != nil {
			t.Fatalf("accepted %q, which encoding/json rejects: %v", b, err)
		}
		if diff := diffSandboxes(sbs, lenient); diff != "" {
			t.Fatalf("encoding/json reads %q differently: %s", b, diff)
		}
		out, err := json.Marshal(routes.Document{Sandboxes: sbs})
		if err != nil {
			t.Fatal(err)
		}
		again, err := routes.ParseDocument(out)
		if err != nil {
			t.Fatalf("re-marshalled %q rejected: %v", out, err)
		}
		if diff := diffSandboxes(sbs, again); diff != "" {
			t.Fatalf("round trip through %q: %s", out, diff)
		}
	})
}

// duplicateKey returns a key that some object of the JSON value b holds
// twice, or "".
func duplicateKey(b []byte) string {
	dec := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		object bool
		keys   map[string]bool
		key    bool // the next string token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return ""
		}
		if err != nil {
			return ""
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if k, ok := tok.(string); ok && top != nil && top.object && top.key {
			if top.keys[k] {
				return k
			}
			top.keys[k] = true
			top.key = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, keys: map[string]bool{}, key: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: the object around it expects a key next.
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].key = true
		}
	}
}

// lenientParse reads a route document the way a plain json.Unmarshal
// would, with the tags of routes.Sandbox but none of its strictness.
func lenientParse(b []byte) ([]routes.Sandbox, error) {
	type route struct {
		Upstream   string    `json:"upstream"`
		ActiveFrom time.Time `json:"activeFrom"`
		RemovedAt  time.Time `json:"removedAt"`
	}
	type sandbox struct {
		ID       string                     `json:"id"`
		Actor    string                     `json:"actor"`
		Origin   string                     `json:"origin"`
		Expires  time.Time                  `json:"expires"`
		Database string                     `json:"database"`
		Budget   *routes.Budget             `json:"budget"`
		Services map[string]json.RawMessage `json:"services"`
	}
	var doc struct {
		Sandboxes []sandbox `json:"sandboxes"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	out := make([]routes.Sandbox, len(doc.Sandboxes))
	for i, s := range doc.Sandboxes {
		out[i] = routes.Sandbox{ID: s.ID, Actor: s.Actor, Origin: s.Origin, Expires: s.Expires, Database: s.Database, Budget: s.Budget}
		if s.Services != nil {
			out[i].Services = map[string]routes.Route{}
		}
		for name, raw := range s.Services {
			var r route
			if err := json.Unmarshal(raw, &r.Upstream); err != nil {
				if err := json.Unmarshal(raw, &r); err != nil {
					return nil, err
				}
			}
			out[i].Services[name] = routes.Route{Upstream: r.Upstream, ActiveFrom: r.ActiveFrom, RemovedAt: r.RemovedAt}
		}
	}
	return out, nil
}

// diffSandboxes describes the first difference between a and b, or "".
// Times compare as instants; a nil and an empty services map are equal.
func diffSandboxes(a, b []routes.Sandbox) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d sandboxes against %d", len(a), len(b))
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.ID != y.ID || x.Actor != y.Actor || x.Origin != y.Origin || x.Database != y.Database || !x.Expires.Equal(y.Expires) {
			return fmt.Sprintf("sandbox %d: %+v against %+v", i, x, y)
		}
		if (x.Budget == nil) != (y.Budget == nil) || x.Budget != nil && *x.Budget != *y.Budget {
			return fmt.Sprintf("sandbox %d: budget %+v against %+v", i, x.Budget, y.Budget)
		}
		if !slices.Equal(slices.Sorted(maps.Keys(x.Services)), slices.Sorted(maps.Keys(y.Services))) {
			return fmt.Sprintf("sandbox %d: services %v against %v", i, x.Services, y.Services)
		}
		for name, r := range x.Services {
			s := y.Services[name]
			if r.Upstream != s.Upstream || !r.ActiveFrom.Equal(s.ActiveFrom) || !r.RemovedAt.Equal(s.RemovedAt) {
				return fmt.Sprintf("sandbox %d service %q: %+v against %+v", i, name, r, s)
			}
		}
	}
	return ""
}
