package httpmw_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestTransportTableNotSynced: a routing transport whose table has never
// loaded cannot tell whether a sandbox overrides its service, so it fails
// closed: the sandbox's request is refused with ErrSandboxUnavailable and
// audited as rejected (not sent to the baseline as "not overridden"),
// unless WithFallbackOnUnavailable allows the baseline. Requests without a
// sandbox are unaffected, and a table made by NewStatic counts as loaded.
func TestTransportTableNotSynced(t *testing.T) {
	baseline := newUpstream(t, "baseline")
	hosts := map[string]string{strings.TrimPrefix(baseline.URL, "http://"): "cart"}
	kinds := []struct {
		name  string
		build func(*routes.Table, ...httpmw.RoutingTransportOption) (*httpmw.Transport, error)
	}{
		{"routing", func(tab *routes.Table, opts ...httpmw.RoutingTransportOption) (*httpmw.Transport, error) {
			return httpmw.NewRoutingTransport(&http.Transport{}, tab, "cart", opts...)
		}},
		{"host routing", func(tab *routes.Table, opts ...httpmw.RoutingTransportOption) (*httpmw.Transport, error) {
			return httpmw.NewHostRoutingTransport(&http.Transport{}, tab, hosts, opts...)
		}},
	}
	for _, k := range kinds {
		t.Run(k.name+"/refused", func(t *testing.T) {
			alog, logger := newAuditLog()
			c := newClient(t, must(k.build(routes.New(), httpmw.WithLogger(logger))))
			hits := baseline.hits.Load()
			_, err := c.Do(mustRequest(t, sandboxCtx("pr-1", ""), http.MethodGet, baseline.URL, nil))
			if !errors.Is(err, httpmw.ErrSandboxUnavailable) || !strings.Contains(err.Error(), "not synced") {
				t.Fatalf("err = %v; want ErrSandboxUnavailable saying the table is not synced", err)
			}
			if n := baseline.hits.Load() - hits; n != 0 {
				t.Errorf("the baseline served %d sandbox requests", n)
			}
			recs := alog.Records()
			if len(recs) != 1 || recs[0][audit.KeyDecision] != string(audit.Rejected) || recs[0][audit.KeyReason] != audit.ReasonNotSynced {
				t.Errorf("audit %v; want one rejected record, reason %q", recs, audit.ReasonNotSynced)
			}
			// Requests without a sandbox are not affected.
			resp, err := c.Do(mustRequest(t, context.Background(), http.MethodGet, baseline.URL, nil))
			if err != nil {
				t.Fatal(err)
			}
			decodeSeen(t, resp)
		})
		t.Run(k.name+"/fallback when allowed", func(t *testing.T) {
			alog, logger := newAuditLog()
			c := newClient(t, must(k.build(routes.New(), httpmw.WithLogger(logger), httpmw.WithFallbackOnUnavailable())))
			resp, err := c.Do(mustRequest(t, sandboxCtx("pr-1", ""), http.MethodGet, baseline.URL, nil))
			if err != nil {
				t.Fatal(err)
			}
			if got := decodeSeen(t, resp); got.Server != "baseline" || got.Sandbox != "pr-1" {
				t.Errorf("served by %s as %q; want baseline, pr-1", got.Server, got.Sandbox)
			}
			recs := alog.Records()
			if len(recs) != 1 || recs[0][audit.KeyDecision] != string(audit.Fallback) || recs[0][audit.KeyReason] != audit.ReasonNotSynced {
				t.Errorf("audit %v; want one fallback record, reason %q", recs, audit.ReasonNotSynced)
			}
		})
		t.Run(k.name+"/static table is loaded", func(t *testing.T) {
			// pr-2 is in the table and overrides no service; pr-1 is not
			// in it at all (a typo, or torn down): both go to the
			// baseline, each with its own reason.
			table := must(routes.NewStatic([]routes.Sandbox{{ID: "pr-2"}}))
			for id, reason := range map[string]string{"pr-1": audit.ReasonUnknownSandbox, "pr-2": audit.ReasonNotOverridden} {
				alog, logger := newAuditLog()
				c := newClient(t, must(k.build(table, httpmw.WithLogger(logger))))
				resp, err := c.Do(mustRequest(t, sandboxCtx(id, ""), http.MethodGet, baseline.URL, nil))
				if err != nil {
					t.Fatal(err)
				}
				decodeSeen(t, resp)
				recs := alog.Records()
				if len(recs) != 1 || recs[0][audit.KeyReason] != reason {
					t.Errorf("%s: audit %v; want one fallback record, reason %q", id, recs, reason)
				}
			}
		})
	}
}

// TestProxyTableNotSynced: the proxy answers a sandbox request 503 with
// Retry-After while its table has never loaded, unless
// WithFallbackOnUnavailable allows the baseline.
func TestProxyTableNotSynced(t *testing.T) {
	up := newUpstream(t, "baseline")
	c := newClient(t, &http.Transport{})
	sandboxReq := func(srv string) *http.Request {
		req := mustRequest(t, context.Background(), http.MethodGet, srv, nil)
		req.Header.Set("Sandbox-Id", "pr-1")
		return req
	}

	alog, logger := newAuditLog()
	srv := newProxyServer(t, routes.New(), up.URL, httpmw.TrustAll(), httpmw.WithLogger(logger))
	hits := up.hits.Load()
	resp, err := c.Do(sandboxReq(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("status %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if n := up.hits.Load() - hits; n != 0 {
		t.Errorf("the baseline served %d sandbox requests", n)
	}
	if d := alog.Decisions(); len(d) != 2 || d[1] != string(audit.Rejected) {
		t.Errorf("audit %v; want admitted, rejected", d)
	}
	resp, err = c.Do(mustRequest(t, context.Background(), http.MethodGet, srv.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	decodeSeen(t, resp)

	srv = newProxyServer(t, routes.New(), up.URL, httpmw.TrustAll(), httpmw.WithFallbackOnUnavailable())
	resp, err = c.Do(sandboxReq(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeSeen(t, resp); got.Server != "baseline" || got.Sandbox != "pr-1" {
		t.Errorf("served by %s as %q; want baseline, pr-1", got.Server, got.Sandbox)
	}
}
