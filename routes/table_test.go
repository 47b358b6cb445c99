package routes_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLookup(t *testing.T) {
	clk := clocktest.New()
	tbl, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-42", Actor: "alice", Expires: clk.Now().Add(time.Hour), Services: map[string]routes.Route{
			"cart":   {Upstream: "http://10.0.0.7:8080"},
			"orders": {Upstream: "10.0.0.8:9090"},
		}},
		{ID: "pr-7"},
	}, routes.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		id, svc, want string
		ok            bool
	}{
		{"pr-42", "cart", "http://10.0.0.7:8080", true},
		{"pr-42", "orders", "10.0.0.8:9090", true},
		{"pr-42", "shipping", "", false},
		{"pr-7", "cart", "", false},
		{"nope", "cart", "", false},
	} {
		if got, ok := tbl.Lookup(tt.id, tt.svc); got != tt.want || ok != tt.ok {
			t.Errorf("Lookup(%s, %s) = %q, %v; want %q, %v", tt.id, tt.svc, got, ok, tt.want, tt.ok)
		}
	}
	if sb, ok := tbl.Sandbox("pr-42"); !ok || sb.Actor != "alice" {
		t.Errorf("Sandbox(pr-42) = %+v, %v", sb, ok)
	}
	if n := testing.AllocsPerRun(100, func() { tbl.Lookup("pr-42", "cart") }); n != 0 {
		t.Errorf("Lookup allocates %v", n)
	}

	clk.Advance(time.Hour)
	if _, ok := tbl.Lookup("pr-42", "cart"); ok {
		t.Error("expired sandbox still routes")
	}
	if _, ok := tbl.Sandbox("pr-42"); ok {
		t.Error("expired sandbox still listed")
	}
	if got := tbl.Sandboxes(); len(got) != 1 || got[0].ID != "pr-7" {
		t.Errorf("Sandboxes() = %+v", got)
	}
	r, ok := tbl.Route("pr-42", "cart")
	if !ok || !r.RemovedAt.Equal(clk.Now()) {
		t.Errorf("Route of an expired sandbox = %+v, %v; want RemovedAt at expiry", r, ok)
	}
}

func TestActivationWindows(t *testing.T) {
	clk := clocktest.New()
	tbl := routes.New(routes.WithClock(clk.Now), routes.WithTombstoneGrace(30*time.Minute))
	t0 := clk.Now()
	sb := func(svcs map[string]routes.Route) []routes.Sandbox {
		return []routes.Sandbox{{ID: "pr-1", Services: svcs}}
	}
	if err := tbl.Update(sb(map[string]routes.Route{"orders": {Upstream: "h:1"}})); err != nil {
		t.Fatal(err)
	}
	changed := tbl.Changed()

	clk.Advance(time.Minute)
	// The same route again (new upstream): the activation time stays.
	if err := tbl.Update(sb(map[string]routes.Route{"orders": {Upstream: "h:2"}})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed by an update")
	}
	r, _ := tbl.Route("pr-1", "orders")
	if !r.ActiveFrom.Equal(t0) || !r.RemovedAt.IsZero() || r.Upstream != "h:2" {
		t.Fatalf("route = %+v, want active from %v", r, t0)
	}
	// A no-op update does not signal a change.
	changed = tbl.Changed()
	if err := tbl.Update(sb(map[string]routes.Route{"orders": {Upstream: "h:2"}})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
		t.Fatal("a no-op update signalled a change")
	default:
	}

	clk.Advance(time.Minute)
	removed := clk.Now()
	if err := tbl.Update(sb(nil)); err != nil {
		t.Fatal(err)
	}
	if _, ok := tbl.Lookup("pr-1", "orders"); ok {
		t.Fatal("removed route still routes")
	}
	r, ok := tbl.Route("pr-1", "orders")
	if !ok || !r.RemovedAt.Equal(removed) {
		t.Fatalf("tombstone = %+v, %v", r, ok)
	}
	for _, tt := range []struct {
		at   time.Time
		want bool
	}{
		{t0.Add(-time.Second), false},
		{t0, true},
		{removed.Add(-time.Nanosecond), true},
		{removed, false},
	} {
		if got := tbl.ActiveAt("pr-1", "orders", tt.at); got != tt.want {
			t.Errorf("ActiveAt(%v) = %v, want %v", tt.at, got, tt.want)
		}
	}

	// The tombstone outlives updates for the grace period only.
	clk.Advance(29 * time.Minute)
	if err := tbl.Update(sb(nil)); err != nil {
		t.Fatal(err)
	}
	if _, ok := tbl.Route("pr-1", "orders"); !ok {
		t.Fatal("tombstone dropped before the grace period")
	}
	clk.Advance(time.Minute)
	if err := tbl.Update(sb(nil)); err != nil {
		t.Fatal(err)
	}
	if _, ok := tbl.Route("pr-1", "orders"); ok {
		t.Fatal("tombstone kept past the grace period")
	}

	// Re-adding starts a new window.
	if err := tbl.Update(sb(map[string]routes.Route{"orders": {Upstream: "h:3"}})); err != nil {
		t.Fatal(err)
	}
	if r, _ := tbl.Route("pr-1", "orders"); !r.ActiveFrom.Equal(clk.Now()) {
		t.Fatalf("re-added route active from %v, want %v", r.ActiveFrom, clk.Now())
	}
}

func TestExplicitWindowsAgreeAcrossTables(t *testing.T) {
	// Two processes load the same document at different moments: times
	// from the document make them agree.
	doc := `{"sandboxes":[{"id":"pr-1","services":{"orders":{"upstream":"h:1",
		"activeFrom":"2026-11-27T09:00:00Z","removedAt":"2026-11-27T10:00:00Z"}}}]}`
	sbs, err := routes.ParseDocument([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := clocktest.New(), clocktest.New()
	c2.Advance(17 * time.Minute)
	t1, _ := routes.NewStatic(sbs, routes.WithClock(c1.Now))
	t2, _ := routes.NewStatic(sbs, routes.WithClock(c2.Now))
	base := time.Date(2026, 11, 27, 8, 59, 0, 0, time.UTC)
	for m := 0; m < 70; m++ {
		at := base.Add(time.Duration(m) * time.Minute)
		if a, b := t1.ActiveAt("pr-1", "orders", at), t2.ActiveAt("pr-1", "orders", at); a != b {
			t.Fatalf("at %v the tables disagree: %v vs %v", at, a, b)
		}
	}
	if !t1.ActiveAt("pr-1", "orders", base.Add(time.Minute)) || t1.ActiveAt("pr-1", "orders", base.Add(61*time.Minute)) {
		t.Fatal("window not taken from the document")
	}
}

func TestValidation(t *testing.T) {
	tbl, err := routes.NewStatic([]routes.Sandbox{{ID: "good", Services: map[string]routes.Route{"cart": {Upstream: "h:1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		sbs  []routes.Sandbox
		want string
	}{
		{"bad id", []routes.Sandbox{{ID: "good"}, {ID: "Bad_ID"}}, `$.sandboxes[1].id: propagation: invalid sandbox ID: "Bad_ID"`},
		{"duplicate", []routes.Sandbox{{ID: "a"}, {ID: "b"}, {ID: "a"}}, `$.sandboxes[2].id: sandbox "a" appears twice (first at $.sandboxes[0])`},
		{"bad actor", []routes.Sandbox{{ID: "a", Actor: "x\ny"}}, `$.sandboxes[0].actor: sandbox "a"`},
		{"bad origin", []routes.Sandbox{{ID: "a", Origin: "x\ny"}}, `$.sandboxes[0].origin: sandbox "a"`},
		{"bad upstream", []routes.Sandbox{{ID: "a", Services: map[string]routes.Route{"cart": {Upstream: "ftp://x"}}}}, `$.sandboxes[0].services.cart: sandbox "a" service "cart"`},
		{"upstream with path", []routes.Sandbox{{ID: "a", Services: map[string]routes.Route{"cart": {Upstream: "http://x:1/p"}}}}, `service "cart"`},
		{"no port", []routes.Sandbox{{ID: "a", Services: map[string]routes.Route{"cart": {Upstream: "hostonly"}}}}, `service "cart"`},
		{"bad service", []routes.Sandbox{{ID: "a", Services: map[string]routes.Route{"c art": {Upstream: "h:1"}}}}, `$.sandboxes[0].services["c art"]: sandbox "a" service "c art": bad service name`},
		{"first bad service by name", []routes.Sandbox{{ID: "a", Services: map[string]routes.Route{"z": {Upstream: "x"}, "b": {Upstream: "y"}, "m": {Upstream: "z"}, "c": {Upstream: "h:1"}}}}, `service "b"`},
		{"empty service name besides a bad one", []routes.Sandbox{{ID: "a", Services: map[string]routes.Route{"000": {Upstream: "0"}, "": {}}}}, `services[""]`},
		{"negative budget", []routes.Sandbox{{ID: "a", Budget: &routes.Budget{Rate: -1}}}, "$.sandboxes[0].budget: "},
		{"removed before active", []routes.Sandbox{{ID: "a", Services: map[string]routes.Route{"cart": {Upstream: "h:1",
			ActiveFrom: time.Unix(100, 0), RemovedAt: time.Unix(50, 0)}}}}, "removedAt before activeFrom"},
		{"consumer-only removed before active", []routes.Sandbox{{ID: "a", Services: map[string]routes.Route{"cart": {
			ActiveFrom: time.Unix(100, 0), RemovedAt: time.Unix(50, 0)}}}}, "removedAt before activeFrom"},
	} {
		err := tbl.Update(tt.sbs)
		if !errors.Is(err, routes.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want ErrInvalid naming %s", tt.name, err, tt.want)
		}
		if tbl.Err() == nil {
			t.Errorf("%s: Err() not set", tt.name)
		}
		if up, ok := tbl.Lookup("good", "cart"); !ok || up != "h:1" {
			t.Fatalf("%s: last good table lost", tt.name)
		}
	}
	for _, doc := range []string{`{"sandboxes":[{"id":"a","servces":{}}]}`, `{"sandboxes":[]} {}`, `[`, `{"sandboxes":[{"id":"a","services":{"x":{"upstream":"h:1","bogus":1}}}]}`} {
		if _, err := routes.ParseDocument([]byte(doc)); !errors.Is(err, routes.ErrInvalid) {
			t.Errorf("ParseDocument(%s) = %v, want ErrInvalid", doc, err)
		}
	}
}

func TestUpdateDoesNotAlias(t *testing.T) {
	svcs := map[string]routes.Route{"cart": {Upstream: "h:1"}}
	tbl, _ := routes.NewStatic([]routes.Sandbox{{ID: "a", Services: svcs}})
	svcs["cart"] = routes.Route{Upstream: "h:2"}
	svcs["evil"] = routes.Route{Upstream: "h:3"}
	if up, _ := tbl.Lookup("a", "cart"); up != "h:1" {
		t.Fatalf("caller's map changed the table: %s", up)
	}
	if _, ok := tbl.Lookup("a", "evil"); ok {
		t.Fatal("caller's map changed the table")
	}
}

func TestConsumerOnlyRoute(t *testing.T) {
	clk := clocktest.New()
	tbl, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1", Services: map[string]routes.Route{"shipping": {}}}}, routes.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if up, ok := tbl.Lookup("pr-1", "shipping"); ok {
		t.Fatalf("Lookup of a consumer-only route = %q, true", up)
	}
	if !tbl.ActiveAt("pr-1", "shipping", clk.Now()) {
		t.Fatal("consumer-only route not active")
	}
}

// TestExampleDocument keeps the documented example file valid.
func TestExampleDocument(t *testing.T) {
	b, err := os.ReadFile("testdata/example.json")
	if err != nil {
		t.Fatal(err)
	}
	sbs, err := routes.ParseDocument(b)
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New() // 2026-11-27T09:00Z
	clk.Advance(time.Hour)
	tbl, err := routes.NewStatic(sbs, routes.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if up, ok := tbl.Lookup("pr-42", "orders"); !ok || up != "10.0.3.8:9090" {
		t.Errorf("Lookup(pr-42, orders) = %q, %v", up, ok)
	}
	if sb, _ := tbl.Sandbox("pr-42"); sb.Budget == nil || sb.Budget.Rate != 50 || sb.Database == "" {
		t.Errorf("pr-42 = %+v", sb)
	}
	if !tbl.ActiveAt("pr-42", "shipping", clk.Now()) || tbl.ActiveAt("pr-42", "shipping", clk.Now().Add(2*time.Hour)) {
		t.Error("shipping window not as documented")
	}
	if _, ok := tbl.Lookup("feat-search", "search"); ok || !tbl.ActiveAt("feat-search", "search", clk.Now()) {
		t.Error("consumer-only route not as documented")
	}
}

// TestExampleDocumentNotExpired: the example the package doc shows (the
// same as testdata/example.json) is one a reader can paste into a route
// file today. An expired sandbox drops out of every lookup without a
// word, so a pasted example that has expired routes nothing.
func TestExampleDocumentNotExpired(t *testing.T) {
	b, err := os.ReadFile("testdata/example.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	sbs, err := routes.ParseDocument(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range sbs {
		if !sb.Expires.IsZero() && !sb.Expires.After(time.Now()) {
			t.Errorf("testdata/example.json: sandbox %s expired at %v; pasted, it routes nothing", sb.ID, sb.Expires)
		}
		if !sb.Expires.IsZero() && !bytes.Contains(doc, []byte(`"expires": "`+sb.Expires.Format(time.RFC3339)+`"`)) {
			t.Errorf("doc.go's JSON example does not show %s's expiry %s as testdata/example.json does", sb.ID, sb.Expires.Format(time.RFC3339))
		}
	}
}

// TestValidateService: the names a route table holds pass, the others
// (which a middleware built for them would never route) fail, naming the
// service.
func TestValidateService(t *testing.T) {
	for _, ok := range []string{"cart", "cart.v1.Cart", "a_b-c", strings.Repeat("a", 253)} {
		if err := routes.ValidateService(ok); err != nil {
			t.Errorf("ValidateService(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", " cart", "cart ", "cart/v1", "café", strings.Repeat("a", 254)} {
		err := routes.ValidateService(bad)
		if err == nil || !strings.Contains(err.Error(), "bad service name") {
			t.Errorf("ValidateService(%q) = %v, want a bad service name error", bad, err)
		}
		if _, perr := routes.NewStatic([]routes.Sandbox{{ID: "pr-1", Services: map[string]routes.Route{bad: {Upstream: "h:1"}}}}); perr == nil {
			t.Errorf("a table holds %q, which ValidateService refuses", bad)
		}
	}
}
