package httpmw_test

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestMixedSpellingsConfiguredCodecsOverHTTP (atk3): through a real
// server on loopback, with codecs configured with unusual names (a
// dedicated header holding '_' or '.', one longer than 64 bytes, baggage
// keys mixing '_' and '-', Signadot and Okteto), every marker header sent
// by an untrusted client with its hyphens and underscores mixed at random
// and its case at random, alone, under mixed grpc-gateway prefixes, and
// beside a dozen ordinary headers, is gone before the handler; a header
// differing at its last byte is kept.
func TestMixedSpellingsConfiguredCodecsOverHTTP(t *testing.T) {
	codecs := map[string][]propagation.Option{
		"default":    nil,
		"underscore": {propagation.WithHeader("X_Sandbox_Id")},
		"dot":        {propagation.WithHeader("x.sandbox-id")},
		"long":       {propagation.WithHeader("x-" + strings.Repeat("ab-", 20) + "sandbox-id")},
		"keys":       {propagation.WithBaggageKeys("tenant_sb-id", "tenant-sb_actor", "t-s-o"), propagation.WithTicketKey("t_k-t"), propagation.WithSignadot(), propagation.WithOkteto()},
	}
	rng := rand.New(rand.NewPCG(5, 3))
	mix := func(s string) string {
		b := []byte(s)
		for i := range b {
			switch {
			case b[i] == '-' || b[i] == '_':
				b[i] = "-_"[rng.IntN(2)]
			case rng.IntN(2) == 0:
				b[i] = strings.ToUpper(string(b[i]))[0]
			}
		}
		return string(b)
	}
	cgi := func(k string) string { return strings.ReplaceAll(strings.ToLower(k), "_", "-") }
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(r.Header)
	})
	for cname, opts := range codecs {
		t.Run(cname, func(t *testing.T) {
			c, err := propagation.NewCodec(opts...)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(must(httpmw.NewHandler(app, httpmw.WithCodec(c), httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")))))
			defer srv.Close()
			names := append([]string{propagation.SignadotJaegerHeader, propagation.SignadotDatadogHeader}, c.KeyHeaders()...)
			if c.Header() != "" {
				names = append(names, c.Header())
			}
			markers := map[string]bool{}
			for _, n := range names {
				markers[cgi(n)] = true
			}
			client := newClient(t, &http.Transport{})
			for _, n := range names {
				for range 6 {
					sent := []string{mix(n), mix("grpc-metadata-" + n), mix("grpc-metadata-grpc-metadata-" + n)}
					keep := n[:len(n)-1] + "q"
					if markers[cgi(keep)] {
						keep = ""
					}
					req := mustRequest(t, context.Background(), http.MethodGet, srv.URL, nil)
					if rng.IntN(2) == 0 {
						for i := range 12 {
							req.Header.Set("X-Filler-"+strings.Repeat("a", i), "v")
						}
					}
					for _, k := range sent {
						req.Header[k] = []string{"pr-9"} // as sent, not canonical
					}
					if keep != "" {
						req.Header[keep] = []string{"pr-9"}
					}
					resp, err := client.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					var got http.Header
					err = json.NewDecoder(resp.Body).Decode(&got)
					resp.Body.Close()
					if err != nil || resp.StatusCode != http.StatusOK {
						t.Fatalf("status %d, %v", resp.StatusCode, err)
					}
					for k := range got {
						rest := cgi(k)
						for strings.HasPrefix(rest, "grpc-metadata-") {
							rest = rest[len("grpc-metadata-"):]
						}
						if markers[rest] {
							t.Errorf("sent %q: the handler holds %s", sent, k)
						}
					}
					if keep != "" && got.Get(keep) != "pr-9" {
						t.Errorf("%s (not a marker) was not kept", keep)
					}
				}
			}
		})
	}
}

// TestTicketAsIDNotEchoed (atk3): a trusted client that sends its ticket
// as the sandbox ID (-H "Sandbox-Id: $TICKET") gets a 400 that does not
// show the ticket's signature.
func TestTicketAsIDNotEchoed(t *testing.T) {
	const tk = "v1.k1.1795777200.XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	srv := httptest.NewServer(must(httpmw.NewHandler(app, httpmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8")))))
	defer srv.Close()
	for _, h := range []http.Header{{"Sandbox-Id": {tk}}, {"Sandbox-Id": {"pr-1", tk}}, {"Baggage": {"sandbox.id=" + tk}}} {
		req := mustRequest(t, context.Background(), http.MethodGet, srv.URL, nil)
		req.Header = h
		resp, err := newClient(t, &http.Transport{}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body strings.Builder
		_, err = io.Copy(&body, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%v: status %d, %v", h, resp.StatusCode, err)
		}
		if strings.Contains(body.String(), "XQeUWNmS") || !strings.Contains(body.String(), "v1.k1.1795777200.redacted") {
			t.Errorf("%v: 400 body %q, want the ticket's key ID and expiry only", h, body.String())
		}
	}
}
