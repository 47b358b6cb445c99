package grpcmw_test

import (
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/routes"
)

// TestRouterReachesEveryUpstreamFormTheTableTakes: the route table takes
// an upstream as host:port or as an http(s) URL with an empty path, query
// or fragment after the host ("http://h:1/", "http://h:1?",
// "http://h:1#", routes.ValidateUpstream); the router dialled the gRPC
// target "h:1?" for the last two, which never connected, so the
// sandbox's calls fell back to the baseline with its version up.
func TestRouterReachesEveryUpstreamFormTheTableTakes(t *testing.T) {
	for _, form := range []string{"%s", "http://%s", "http://%s/", "http://%s?", "http://%s#", "http://%s/?", "http://%s/#"} {
		t.Run(form, func(t *testing.T) {
			f := newFleet(t, func(addr string) []routes.Sandbox {
				up := fmtUpstream(form, addr)
				if err := routes.ValidateUpstream(up); err != nil {
					t.Fatalf("the table refuses %q: %v", up, err)
				}
				return []routes.Sandbox{{ID: "feat-a", Services: map[string]routes.Route{"cart": {Upstream: up}}}}
			})
			seen, err := call(inSandbox("feat-a"), f.client, unary)
			if err != nil {
				t.Fatal(err)
			}
			if seen.Server != "sandbox" {
				t.Errorf("upstream %q: served by %s, want the sandbox", fmtUpstream(form, f.sandboxAddr), seen.Server)
			}
		})
	}
}

func fmtUpstream(form, addr string) string { return strings.Replace(form, "%s", addr, 1) }
