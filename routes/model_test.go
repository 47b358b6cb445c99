package routes_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// model is the route table's documented behaviour, written the plain way:
// every update rebuilds everything from the whole input.
type model struct {
	grace  time.Duration
	input  map[string]routes.Sandbox
	routes map[[2]string]modelRoute
}

type modelRoute struct {
	routes.Route
	expires time.Time
	tomb    bool
}

func (m *model) update(sbs []routes.Sandbox, now time.Time) {
	next := map[[2]string]modelRoute{}
	m.input = map[string]routes.Sandbox{}
	for _, sb := range sbs {
		m.input[sb.ID] = sb
		for svc, r := range sb.Services {
			k := [2]string{sb.ID, svc}
			if r.ActiveFrom.IsZero() {
				if prev, ok := m.routes[k]; ok && !prev.tomb {
					r.ActiveFrom = prev.ActiveFrom
				} else {
					r.ActiveFrom = now
				}
			}
			next[k] = modelRoute{Route: r, expires: sb.Expires}
		}
	}
	for k, e := range m.routes {
		if _, ok := next[k]; ok {
			continue
		}
		if e.RemovedAt.IsZero() {
			e.RemovedAt = now
		}
		e.tomb = true
		if now.Sub(e.RemovedAt) < m.grace {
			next[k] = e
		}
	}
	m.routes = next
}

func (m *model) current() []routes.Sandbox {
	return slices.Collect(maps.Values(m.input))
}

// TestUpdateMatchesModel applies random sequences of Update, Put and
// Remove (one sandbox or many, explicit windows or none, expiries, time
// passing over the tombstone grace) to a table and to the model, and
// compares every route after each step.
func TestUpdateMatchesModel(t *testing.T) {
	const grace = 30 * time.Minute
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]string, 40)
	for i := range ids {
		ids[i] = fmt.Sprintf("sb-%d", i)
	}
	svcs := []string{"cart", "orders", "shipping"}
	for run := range 20 {
		clk := clocktest.New()
		tbl := routes.New(routes.WithClock(clk.Now), routes.WithTombstoneGrace(grace))
		m := &model{grace: grace, routes: map[[2]string]modelRoute{}}
		randSandbox := func(id string) routes.Sandbox {
			sb := routes.Sandbox{ID: id, Actor: []string{"", "alice", "bob"}[rng.IntN(3)]}
			if rng.IntN(4) == 0 {
				sb.Expires = clk.Now().Add(time.Duration(rng.IntN(60)) * time.Minute)
			}
			if rng.IntN(5) > 0 {
				sb.Services = map[string]routes.Route{}
			}
			for _, svc := range svcs {
				if sb.Services == nil || rng.IntN(2) == 0 {
					continue
				}
				r := routes.Route{Upstream: fmt.Sprintf("h:%d", 1+rng.IntN(3))}
				if rng.IntN(3) == 0 {
					r.ActiveFrom = clk.Now().Add(-time.Duration(rng.IntN(30)) * time.Minute)
					if rng.IntN(2) == 0 {
						r.RemovedAt = r.ActiveFrom.Add(time.Duration(rng.IntN(30)) * time.Minute)
					}
				} else if rng.IntN(5) == 0 {
					r.RemovedAt = clk.Now().Add(time.Duration(rng.IntN(40)-20) * time.Minute)
				}
				sb.Services[svc] = r
			}
			return sb
		}
		for step := range 60 {
			clk.Advance(time.Duration(rng.IntN(20)) * time.Minute)
			now := clk.Now()
			var what string
			switch op := rng.IntN(4); {
			case op == 0: // a whole new list
				var sbs []routes.Sandbox
				for _, id := range ids {
					if rng.IntN(2) == 0 {
						sbs = append(sbs, randSandbox(id))
					}
				}
				what = fmt.Sprintf("Update(%d sandboxes)", len(sbs))
				if err := tbl.Update(sbs); err != nil {
					t.Fatal(err)
				}
				m.update(sbs, now)
			case op == 1: // the same list with one sandbox changed, added or gone
				cur := m.current()
				id := ids[rng.IntN(len(ids))]
				cur = slices.DeleteFunc(cur, func(sb routes.Sandbox) bool { return sb.ID == id })
				if rng.IntN(3) > 0 {
					cur = append(cur, randSandbox(id))
				}
				rng.Shuffle(len(cur), func(i, j int) { cur[i], cur[j] = cur[j], cur[i] })
				what = "Update(one changed: " + id + ")"
				if err := tbl.Update(cur); err != nil {
					t.Fatal(err)
				}
				m.update(cur, now)
			case op == 2:
				sb := randSandbox(ids[rng.IntN(len(ids))])
				what = "Put(" + sb.ID + ")"
				if err := tbl.Put(sb); err != nil {
					t.Fatal(err)
				}
				m.update(append(slices.DeleteFunc(m.current(), func(x routes.Sandbox) bool { return x.ID == sb.ID }), sb), now)
			default:
				id := ids[rng.IntN(len(ids))]
				what = "Remove(" + id + ")"
				tbl.Remove(id)
				m.update(slices.DeleteFunc(m.current(), func(x routes.Sandbox) bool { return x.ID == id }), now)
			}
			for _, id := range ids {
				for _, svc := range svcs {
					k := [2]string{id, svc}
					want, wok := m.routes[k]
					if wok && !want.expires.IsZero() && (want.RemovedAt.IsZero() || want.expires.Before(want.RemovedAt)) {
						want.RemovedAt = want.expires
					}
					got, ok := tbl.Route(id, svc)
					if ok != wok || ok && (got.Upstream != want.Upstream || !got.ActiveFrom.Equal(want.ActiveFrom) || !got.RemovedAt.Equal(want.RemovedAt)) {
						t.Fatalf("run %d step %d after %s: Route(%s, %s) = %+v, %v; want %+v, %v", run, step, what, id, svc, got, ok, want.Route, wok)
					}
				}
			}
			var wantIDs, gotIDs []string
			for _, sb := range m.input {
				if sb.Expires.IsZero() || now.Before(sb.Expires) {
					wantIDs = append(wantIDs, sb.ID)
				}
			}
			slices.Sort(wantIDs)
			for _, sb := range tbl.Sandboxes() {
				gotIDs = append(gotIDs, sb.ID)
			}
			if !slices.Equal(gotIDs, wantIDs) {
				t.Fatalf("run %d step %d after %s: Sandboxes() = %v, want %v", run, step, what, gotIDs, wantIDs)
			}
		}
	}
}

// TestPutRemove: the one-sandbox changes, and what they signal.
func TestPutRemove(t *testing.T) {
	clk := clocktest.New()
	tbl, err := routes.NewStatic([]routes.Sandbox{{ID: "a", Services: map[string]routes.Route{"cart": {Upstream: "h:1"}}}}, routes.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	changed := tbl.Changed()
	if err := tbl.Put(routes.Sandbox{ID: "a", Services: map[string]routes.Route{"cart": {Upstream: "h:1"}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
		t.Fatal("putting an unchanged sandbox signalled a change")
	default:
	}
	if err := tbl.Put(routes.Sandbox{ID: "b", Services: map[string]routes.Route{"cart": {Upstream: "h:2"}}}); err != nil {
		t.Fatal(err)
	}
	<-changed
	if up, _ := tbl.Lookup("a", "cart"); up != "h:1" {
		t.Fatalf("Put of b changed a: %q", up)
	}
	if up, _ := tbl.Lookup("b", "cart"); up != "h:2" {
		t.Fatalf("b = %q", up)
	}
	if err := tbl.Put(routes.Sandbox{ID: "c"}, routes.Sandbox{ID: "BAD"}); err == nil {
		t.Fatal("Put of an invalid sandbox succeeded")
	}
	if _, ok := tbl.Sandbox("c"); ok {
		t.Fatal("part of a rejected Put was applied")
	}
	clk.Advance(time.Minute)
	changed = tbl.Changed()
	tbl.Remove("a", "nope")
	<-changed
	if r, ok := tbl.Route("a", "cart"); !ok || !r.RemovedAt.Equal(clk.Now()) {
		t.Fatalf("after Remove: %+v, %v; want a tombstone", r, ok)
	}
	changed = tbl.Changed()
	tbl.Remove("nope")
	select {
	case <-changed:
		t.Fatal("removing an unknown sandbox signalled a change")
	default:
	}
	if n := testing.AllocsPerRun(100, func() { tbl.Lookup("b", "cart") }); n != 0 {
		t.Fatalf("Lookup allocates %v", n)
	}
}
