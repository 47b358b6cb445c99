package grpcmw_test

import (
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/routes"
)

// FuzzTarget checks the router's gRPC target for every upstream the route
// table accepts against net/url: gRPC reads a target without a scheme as
// the path of "dns:///" + target, unescaped, and that must be the host and
// port url.Parse reads in the upstream's URL form (the scheme's port when
// it has none), or the host:port form as written.
func FuzzTarget(f *testing.F) {
	for _, s := range []string{"h:1", "[::1]:80", "[::1%lo]:80", "http://h:1", "https://h", "http://h:1/?", "http://[::1%25lo]:80", "http://[::1]", "h.:80", "#:1", "http://]", "[::%#]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, up string) {
		if routes.ValidateUpstream(up) != nil {
			return
		}
		tg := grpcmw.Target(up)
		pu, err := url.Parse("dns:///" + tg)
		if err != nil {
			t.Fatalf("%q: target %q, which gRPC cannot parse: %v", up, tg, err)
		}
		got := strings.TrimPrefix(pu.Path, "/")
		want := up
		if strings.Contains(up, "://") {
			u, err := url.Parse(up)
			if err != nil {
				t.Fatalf("%q: accepted by the table, refused by url.Parse: %v", up, err)
			}
			port := u.Port()
			if port == "" {
				port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
			}
			want = net.JoinHostPort(u.Hostname(), port)
		}
		if got != want {
			t.Fatalf("%q: gRPC dials %q (target %q); want %q", up, got, tg, want)
		}
	})
}
