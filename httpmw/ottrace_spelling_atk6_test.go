package httpmw_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/internal/ottest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTFormSpellingsAtk6: a request whose headers the application set
// directly in the map, in OpenTracing's form under non-canonical names
// (copied from gRPC metadata: ot-baggage-tenant, a stale
// ot-baggage-sandbox.id), goes through httpmw's transport with the
// context's sandbox: what ottrace reads of ours, and what the next hop
// with the library reads, is that sandbox, with no second spelling of
// our OT header left beside the one written.
func TestOTFormSpellingsAtk6(t *testing.T) {
	ottest.Quiet(t)
	c := propagation.Default()
	var got http.Header
	next := httptest.NewServer(must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		s, _ := propagation.FromContext(r.Context())
		io.WriteString(w, s.ID)
	}), httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8")))))
	defer next.Close()
	client := &http.Client{Transport: must(httpmw.NewTransport(&http.Transport{}))}
	defer client.CloseIdleConnections()
	for _, stale := range []string{"ot-baggage-sandbox.id", "OT-BAGGAGE-SANDBOX.ID", "Ot-Baggage-Sandbox.Id"} {
		ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-1"})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, next.URL, nil)
		req.Header["ot-baggage-tenant"] = []string{"acme"}
		req.Header[stale] = []string{"pr-9"}
		for _, kv := range ottest.TraceHeaders {
			req.Header.Set(kv[0], kv[1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "pr-1" {
			t.Errorf("%s: next hop answered %d %q; want 200 pr-1", stale, resp.StatusCode, body)
		}
		if ours := ottest.Ours(c, got); ours["sandbox.id"] != "pr-1" || len(got["Ot-Baggage-Sandbox.id"]) != 1 {
			t.Errorf("%s: ottrace reads %v of ours from %v", stale, ours, got)
		}
	}
}
