package routes_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// strictCases are documents a lenient decoder reads as some table (often an
// empty one), each with the error ParseDocument must give: the JSON path,
// then what is wrong.
var strictCases = []struct {
	name, doc, want string
}{
	{"null document", `null`, `$: want an object, got null`},
	{"array document", `[]`, `$: want an object, got an array`},
	{"empty input", ``, `$: unexpected end of the document`},
	{"truncated", `{"sandboxes":[{"id":"a"}`, `unexpected end of the document`},
	{"missing sandboxes", `{}`, `$: missing "sandboxes"`},
	{"null sandboxes", `{"sandboxes":null}`, `$.sandboxes: want an array, got null`},
	{"null sandbox", `{"sandboxes":[null]}`, `$.sandboxes[0]: want an object, got null`},
	{"null id", `{"sandboxes":[{"id":null}]}`, `$.sandboxes[0].id: want a string, got null`},
	{"null services", `{"sandboxes":[{"id":"a","services":null}]}`, `$.sandboxes[0].services: want an object, got null`},
	{"null budget", `{"sandboxes":[{"id":"a","budget":null}]}`, `$.sandboxes[0].budget: want an object, got null`},
	{"null route", `{"sandboxes":[{"id":"a","services":{"cart":null}}]}`, `$.sandboxes[0].services.cart: want an upstream string or an object, got null`},
	{"null activeFrom", `{"sandboxes":[{"id":"a","services":{"cart":{"upstream":"h:1","activeFrom":null}}}]}`, `$.sandboxes[0].services.cart.activeFrom: want a string, got null`},
	{"repeated sandboxes", `{"sandboxes":[{"id":"a"}],"sandboxes":[]}`, `$.sandboxes: duplicate key`},
	{"repeated sandboxes, second null", `{"sandboxes":[{"id":"a"}],"sandboxes":null}`, `$.sandboxes: duplicate key`},
	{"SANDBOXES", `{"SANDBOXES":[]}`, `$.SANDBOXES: unknown field: keys are case-sensitive, did you mean "sandboxes"?`},
	{"Sandboxes beside sandboxes", `{"sandboxes":[{"id":"a"}],"Sandboxes":[]}`, `$.Sandboxes: unknown field: keys are case-sensitive`},
	{"long s folds to s", `{"ſandboxes":[]}`, `unknown field: keys are case-sensitive, did you mean "sandboxes"?`},
	{"repeated id", `{"sandboxes":[{"id":"a"},{"id":"b"},{"id":"c"},{"id":"d","id":"e"}]}`, `$.sandboxes[3].id: duplicate key`},
	{"ID", `{"sandboxes":[{"id":"a","ID":"b"}]}`, `$.sandboxes[0].ID: unknown field: keys are case-sensitive, did you mean "id"?`},
	{"repeated sandbox id", `{"sandboxes":[{"id":"a"},{"id":"b"},{"id":"a"}]}`, `$.sandboxes[2].id: sandbox "a" appears twice (first at $.sandboxes[0])`},
	{"repeated service", `{"sandboxes":[{"id":"a","services":{"cart":"h:1","orders":"h:2","cart":"h:3"}}]}`, `$.sandboxes[0].services.cart: duplicate key`},
	{"repeated service, odd name", `{"sandboxes":[{"id":"a","services":{"a.b":"h:1","a.b":"h:3"}}]}`, `$.sandboxes[0].services["a.b"]: duplicate key`},
	{"repeated upstream", `{"sandboxes":[{"id":"a","services":{"cart":{"upstream":"h:1","upstream":"h:2"}}}]}`, `$.sandboxes[0].services.cart.upstream: duplicate key`},
	{"Upstream", `{"sandboxes":[{"id":"a","services":{"cart":{"Upstream":"h:1"}}}]}`, `$.sandboxes[0].services.cart.Upstream: unknown field: keys are case-sensitive`},
	{"repeated services", `{"sandboxes":[{"id":"a","services":{},"services":{"cart":"h:1"}}]}`, `$.sandboxes[0].services: duplicate key`},
	{"repeated budget rate", `{"sandboxes":[{"id":"a","budget":{"rate":1,"rate":2}}]}`, `$.sandboxes[0].budget.rate: duplicate key`},
	{"maxinflight", `{"sandboxes":[{"id":"a","budget":{"maxinflight":1}}]}`, `$.sandboxes[0].budget.maxinflight: unknown field: keys are case-sensitive, did you mean "maxInFlight"?`},
	{"unknown field", `{"sandboxes":[{"id":"a","servces":{}}]}`, `$.sandboxes[0].servces: unknown field (want one of id, actor, origin, expires, database, budget, services)`},
	{"unknown route field", `{"sandboxes":[{"id":"a","services":{"x":{"upstream":"h:1","bogus":1}}}]}`, `$.sandboxes[0].services.x.bogus: unknown field`},
	{"unknown top-level field", `{"sandboxes":[],"version":2}`, `$.version: unknown field`},
	{"id a number", `{"sandboxes":[{"id":42}]}`, `$.sandboxes[0].id: want a string, got a number`},
	{"route a number", `{"sandboxes":[{"id":"a","services":{"cart":8080}}]}`, `$.sandboxes[0].services.cart: want an upstream string or an object, got a number`},
	{"route an array", `{"sandboxes":[{"id":"a","services":{"cart":["h:1"]}}]}`, `$.sandboxes[0].services.cart: want an upstream string or an object, got an array`},
	{"fractional burst", `{"sandboxes":[{"id":"a","budget":{"burst":1.5}}]}`, `$.sandboxes[0].budget.burst: want an integer, got 1.5`},
	{"exponent burst", `{"sandboxes":[{"id":"a","budget":{"burst":1e3}}]}`, `$.sandboxes[0].budget.burst: want an integer`},
	{"huge rate", `{"sandboxes":[{"id":"a","budget":{"rate":1e400}}]}`, `$.sandboxes[0].budget.rate: number 1e400 out of range`},
	{"bad time", `{"sandboxes":[{"id":"a","expires":"2026-13-01T00:00:00Z"}]}`, `$.sandboxes[0].expires: want an RFC 3339 time`},
	{"escaped time", `{"sandboxes":[{"id":"a","expires":"2026\u002d12-01T00:00:00Z"}]}`, `$.sandboxes[0].expires: want an RFC 3339 time without escapes`},
	{"bool", `{"sandboxes":[{"id":true}]}`, `$.sandboxes[0].id: want a string, got a boolean`},
	{"trailing document", `{"sandboxes":[]} {}`, `$: trailing data after the document`},
	{"trailing garbage", `{"sandboxes":[]}x`, `$: trailing data after the document`},
	{"syntax error", `{"sandboxes":[{"id":"a",}]}`, `$.sandboxes[0]: bad JSON at byte`},
	{"invalid UTF-8", "{\"sandboxes\":[{\"id\":\"a\",\"actor\":\"\xff\"}]}", `$: the document is not valid UTF-8`},
	{"bad id", `{"sandboxes":[{"id":"ok"},{"id":"Bad"}]}`, `$.sandboxes[1].id: propagation: invalid sandbox ID`},
	{"bad upstream", `{"sandboxes":[{"id":"a","services":{"cart":"ftp://x"}}]}`, `$.sandboxes[0].services.cart: sandbox "a" service "cart": upstream "ftp://x"`},
}

func TestStrictDocument(t *testing.T) {
	for _, tt := range strictCases {
		t.Run(tt.name, func(t *testing.T) {
			sbs, err := routes.ParseDocument([]byte(tt.doc))
			if !errors.Is(err, routes.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseDocument(%s) = %v, %v\nwant ErrInvalid with %q", tt.doc, sbs, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "routes: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
			// json.Unmarshal into a Document is as strict.
			var d routes.Document
			if err := json.Unmarshal([]byte(tt.doc), &d); err == nil {
				t.Fatalf("json.Unmarshal accepted %s: %+v", tt.doc, d)
			}
		})
	}
	if _, err := routes.ParseDocument([]byte(`{"sandboxes":[{"id":"BAD"}]}`)); !errors.Is(err, propagation.ErrInvalidID) {
		t.Errorf("an invalid ID does not wrap propagation.ErrInvalidID: %v", err)
	}
}

func TestStrictDocumentAccepts(t *testing.T) {
	example, err := os.ReadFile("testdata/example.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, doc string
		n         int
	}{
		{"example", string(example), 2},
		{"empty table", `{"sandboxes":[]}`, 0},
		{"whitespace", " \n\t{ \"sandboxes\" : [ { \"id\" : \"a\" } ] } \n", 1},
		{"escaped key", `{"sandboxes":[{"\u0069d":"a"}]}`, 1}, // every parser reads "id"
		{"consumer-only routes", `{"sandboxes":[{"id":"a","services":{"x":"","y":{}}}]}`, 1},
		{"integral float rate", `{"sandboxes":[{"id":"a","budget":{"rate":1e2,"burst":-0}}]}`, 1},
	} {
		sbs, err := routes.ParseDocument([]byte(tt.doc))
		if err != nil || len(sbs) != tt.n {
			t.Errorf("%s: ParseDocument = %d sandboxes, %v; want %d", tt.name, len(sbs), err, tt.n)
		}
	}
	sbs, _ := routes.ParseDocument([]byte(`{"sandboxes":[{"id":"a","expires":"2026-12-01T18:00:00+01:00","budget":{"rate":2.5,"burst":3,"maxInFlight":4},
		"services":{"cart":"h:1","orders":{"upstream":"h:2","activeFrom":"2026-11-27T09:00:00Z"}}}]}`))
	if len(sbs) != 1 {
		t.Fatal("document rejected")
	}
	sb := sbs[0]
	if !sb.Expires.Equal(time.Date(2026, 12, 1, 17, 0, 0, 0, time.UTC)) || *sb.Budget != (routes.Budget{Rate: 2.5, Burst: 3, MaxInFlight: 4}) ||
		sb.Services["cart"] != (routes.Route{Upstream: "h:1"}) || sb.Services["orders"].Upstream != "h:2" ||
		!sb.Services["orders"].ActiveFrom.Equal(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("parsed %+v", sb)
	}
}

func TestRouteUnmarshalJSON(t *testing.T) {
	var r routes.Route
	if err := json.Unmarshal([]byte(`"h:1"`), &r); err != nil || r.Upstream != "h:1" {
		t.Fatalf("string route: %+v, %v", r, err)
	}
	if err := json.Unmarshal([]byte(`{"upstream":"h:2","removedAt":"2026-11-27T09:00:00Z"}`), &r); err != nil || r.Upstream != "h:2" || r.RemovedAt.IsZero() {
		t.Fatalf("object route: %+v, %v", r, err)
	}
	for _, doc := range []string{`{"upstream":"h:1","upstream":"h:2"}`, `{"UPSTREAM":"h:1"}`, `{"upstream":null}`, `null`, `1`} {
		if err := json.Unmarshal([]byte(doc), &r); !errors.Is(err, routes.ErrInvalid) {
			t.Errorf("json.Unmarshal(%s) = %v, want ErrInvalid", doc, err)
		}
	}
}

// TestMarshalDocument: what Document marshals to, ParseDocument reads
// back; no sandboxes are an empty list, never null.
func TestMarshalDocument(t *testing.T) {
	b, err := json.Marshal(routes.Document{})
	if err != nil || string(b) != `{"sandboxes":[]}` {
		t.Fatalf("Marshal(Document{}) = %s, %v", b, err)
	}
	if _, err := routes.ParseDocument(b); err != nil {
		t.Fatal(err)
	}
	b, err = json.Marshal(&routes.Document{Sandboxes: []routes.Sandbox{{ID: "a", Services: map[string]routes.Route{"cart": {Upstream: "h:1"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if sbs, err := routes.ParseDocument(b); err != nil || len(sbs) != 1 || sbs[0].Services["cart"].Upstream != "h:1" {
		t.Fatalf("round trip of %s: %+v, %v", b, sbs, err)
	}
}
