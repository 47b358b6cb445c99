package httpmw_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"testing"

	"github.com/sandboxkit/sandboxkit/httpmw"
)

// A service that forwards its incoming headers (a gateway, a BFF) copies
// a Connection header naming our markers as hop-by-hop. Every proxy on the
// way (a mesh sidecar, nginx, httputil.ReverseProxy) removes the headers
// it names, so the next service would see a production request: the
// sandbox's request would write production data. The transport must not
// send its markers as hop-by-hop headers.
func TestTransportMarkersNotHopByHop(t *testing.T) {
	up := newUpstream(t, "orders")
	sidecar := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(mustURL(t, up.URL)) },
		Transport: &http.Transport{},
	})
	defer sidecar.Close()
	c := newClient(t, must(httpmw.NewTransport(&http.Transport{})))
	for _, conn := range []string{"Sandbox-Id", "baggage", "keep-alive, Sandbox-Id , Baggage", "BAGGAGE,sandbox-id"} {
		req := mustRequest(t, sandboxCtx("pr-1", "alice"), http.MethodGet, sidecar.URL+"/orders", nil)
		req.Header.Set("Connection", conn)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeSeen(t, resp); got.Sandbox != "pr-1" {
			t.Errorf("Connection: %s: the service behind the sidecar served the request as %q; want sandbox pr-1", conn, got.Sandbox)
		}
		if v := req.Header.Get("Connection"); v != conn {
			t.Errorf("the caller's request was modified: Connection %q", v)
		}
	}
}
