package etcdroutes_test

import (
	"errors"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
	"github.com/sandboxkit/sandboxkit/routes/etcdroutes"
)

func TestMarshalRoundTrip(t *testing.T) {
	sb := routes.Sandbox{
		ID: "pr-42", Actor: "alice", Origin: "github.com/acme/shop/pull/42",
		Expires: time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC),
		Budget:  &routes.Budget{Rate: 50, Burst: 10},
		Services: map[string]routes.Route{
			"cart":   {Upstream: "http://10.0.3.7:8080", ActiveFrom: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)},
			"orders": {ActiveFrom: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC), RemovedAt: time.Date(2026, 11, 27, 11, 0, 0, 0, time.UTC)},
		},
	}
	v, err := etcdroutes.Marshal(sb)
	if err != nil {
		t.Fatal(err)
	}
	got, err := etcdroutes.Unmarshal("pr-42", v)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := etcdroutes.Marshal(got)
	if string(again) != string(v) {
		t.Fatalf("round trip:\n%s\n%s", v, again)
	}
	if _, err := etcdroutes.Marshal(routes.Sandbox{ID: "Not A Label"}); !errors.Is(err, routes.ErrInvalid) {
		t.Fatalf("Marshal of an invalid sandbox: %v", err)
	}
}

func TestUnmarshalStrict(t *testing.T) {
	for name, tc := range map[string]struct{ id, value string }{
		"second sandbox":  {"pr-1", `{"id":"pr-1"},{"id":"pr-2"}`},
		"closes the list": {"pr-1", `{"id":"pr-1"}]}`},
		"extra field":     {"pr-1", `{"id":"pr-1"}],"x":[1`},
		"other id":        {"pr-1", `{"id":"pr-2"}`},
		"empty":           {"pr-1", ``},
		"null":            {"pr-1", `null`},
		"repeated key":    {"pr-1", `{"id":"pr-1","actor":"a","actor":"b"}`},
		"bad key id":      {"PR 1", `{"id":"PR 1"}`},
		"unknown field":   {"pr-1", `{"id":"pr-1","Services":{}}`},
	} {
		t.Run(name, func(t *testing.T) {
			if sb, err := etcdroutes.Unmarshal(tc.id, []byte(tc.value)); !errors.Is(err, routes.ErrInvalid) {
				t.Fatalf("Unmarshal(%q) = %+v, %v; want ErrInvalid", tc.value, sb, err)
			}
		})
	}
}
