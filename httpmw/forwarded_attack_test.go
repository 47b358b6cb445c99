package httpmw_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/routes"
)

// rfc7239LB is a load balancer that records the client in an RFC 7239
// Forwarded header (HAProxy's "option forwarded", nginx set up per the
// RFC) and passes every other header on as it came, X-Forwarded-For
// included.
func rfc7239LB(t *testing.T, next string) *httptest.Server {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	lb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		out, _ := http.NewRequestWithContext(r.Context(), r.Method, next+r.URL.RequestURI(), r.Body)
		out.Header = r.Header.Clone()
		out.Header.Add("Forwarded", "for="+host+";proto=http")
		resp, err := tr.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(lb.Close)
	return lb
}

// Behind a load balancer that records the client in Forwarded and not in
// X-Forwarded-For, the right end of X-Forwarded-For is what the client
// wrote: with WithTrustedHops(1) an outsider who sent X-Forwarded-For
// naming a trusted address entered a sandbox. A Forwarded header that
// names an untrusted client (or names none) makes the source untrusted,
// whatever X-Forwarded-For says.
func TestTrustedHopsForwardedDisagrees(t *testing.T) {
	baseline, sandbox := newUpstream(t, "baseline"), newUpstream(t, "sandbox")
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}})
	// Only the load balancer, on 127.0.0.1, is trusted; the outsider
	// connects from 127.0.0.2.
	proxy := newProxyServer(t, tab, baseline.URL,
		httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.1/32")), httpmw.WithTrustedHops(1))
	lb := rfc7239LB(t, proxy.URL)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	outsider := newClient(t, &http.Transport{DialContext: d.DialContext})

	for _, xff := range []string{"127.0.0.1", "203.0.113.9, 127.0.0.1"} {
		req := mustRequest(t, context.Background(), http.MethodGet, lb.URL+"/items", nil)
		req.Header.Set("Sandbox-Id", "pr-1")
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := outsider.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeSeen(t, resp); got.Server != "baseline" || got.Sandbox != "" || got.Header != nil {
			t.Errorf("outsider with X-Forwarded-For %q: served by %s as %q (Sandbox-Id %q); want production, markers stripped", xff, got.Server, got.Sandbox, got.Header)
		}
	}

	// An insider behind the same balancer, whose X-Forwarded-For agrees,
	// still gets in.
	insider := newClient(t, &http.Transport{})
	req := mustRequest(t, context.Background(), http.MethodGet, lb.URL+"/items", nil)
	req.Header.Set("Sandbox-Id", "pr-1")
	req.Header.Set("X-Forwarded-For", "127.0.0.1")
	resp, err := insider.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeSeen(t, resp); got.Server != "sandbox" || got.Sandbox != "pr-1" {
		t.Errorf("insider: served by %s as %q; want pr-1's cart", got.Server, got.Sandbox)
	}
}

func TestForwardedFor(t *testing.T) {
	for _, tc := range []struct {
		lines []string
		hops  int
		want  string // "" when untrusted
	}{
		{[]string{"for=192.0.2.60;proto=http;by=203.0.113.43"}, 1, "192.0.2.60"},
		{[]string{`For="[2001:db8:cafe::17]:4711"`}, 1, "2001:db8:cafe::17"},
		{[]string{"for=192.0.2.43, for=198.51.100.17"}, 1, "198.51.100.17"},
		{[]string{"for=192.0.2.43, for=198.51.100.17"}, 2, "192.0.2.43"},
		{[]string{"for=192.0.2.43", "for=198.51.100.17:80"}, 1, "198.51.100.17"},
		{[]string{"for=192.0.2.43", "for=198.51.100.17"}, 2, "192.0.2.43"},
		{[]string{`for=10.0.0.1;by="a,b", for=192.0.2.9`}, 2, "10.0.0.1"},
		{[]string{`proto=http;for="10.0.0.1"`}, 1, "10.0.0.1"},
		{[]string{"for=192.0.2.43"}, 2, ""},
		{[]string{"for=unknown"}, 1, ""},
		{[]string{"for=_hidden"}, 1, ""},
		{[]string{"for=10.0.0.1:_port"}, 1, ""},
		{[]string{"proto=http"}, 1, ""},
		{[]string{"for=10.0.0.1,"}, 1, ""},
		{[]string{`for="10.0.0.1`}, 1, ""},
		{[]string{`for="10.0.\0.1"`}, 1, ""},
		{[]string{"  "}, 1, ""},
	} {
		got, ok := httpmw.ForwardedFor(tc.lines, tc.hops)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("ForwardedFor(%q, %d) = %q, %v; want %q", tc.lines, tc.hops, got, ok, tc.want)
		}
	}
}

// FuzzForwardedFor checks the Forwarded reader against a plain one on
// headers without quotes: split all lines on commas, take the hops-th
// element from the right, its for= parameter.
func FuzzForwardedFor(f *testing.F) {
	for _, s := range []string{"for=10.0.0.1", "for=1.2.3.4, for=10.0.0.1;proto=http", "a\nfor=[::1]:80", "", ",", "for=", ";for=10.0.0.1;", "For=10.0.0.1,for=unknown"} {
		f.Add(s, uint8(1))
		f.Add(s, uint8(2))
	}
	f.Fuzz(func(t *testing.T, raw string, h uint8) {
		hops := int(h%3) + 1
		lines := strings.Split(raw, "\n")
		got, ok := httpmw.ForwardedFor(lines, hops)
		if strings.ContainsAny(raw, "\"\\") {
			return // quoting: covered by TestForwardedFor; here only no panic
		}
		var all []string
		for _, l := range lines {
			if strings.TrimSpace(l) != "" {
				all = append(all, strings.Split(l, ",")...)
			}
		}
		want, wantOK := "", false
		if len(all) >= hops {
			for _, p := range strings.Split(all[len(all)-hops], ";") {
				if k, v, found := strings.Cut(p, "="); found && strings.EqualFold(strings.TrimSpace(k), "for") {
					if a, good := refParse(strings.TrimSpace(v)); good {
						want, wantOK = a.String(), true
					}
					break
				}
			}
		}
		if got != want || ok != wantOK {
			t.Fatalf("ForwardedFor(%q, %d) = %q, %v; want %q, %v", lines, hops, got, ok, want, wantOK)
		}
	})
}
