package grpcmw_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// gatewayOutgoing is what grpc-gateway v2's default header matcher makes
// of an HTTP request's headers for the gRPC call behind it
// (runtime.DefaultHeaderMatcher, runtime/mux.go: the key is canonicalised
// with textproto.CanonicalMIMEHeaderKey and, when it starts with
// "Grpc-Metadata-", passed on without that one prefix; gRPC metadata
// lower-cases it). Only one prefix goes: Grpc-Metadata-Grpc-Metadata-X
// becomes metadata grpc-metadata-x. Permanent HTTP headers, which the
// matcher passes on as grpcgateway-<name>, are left out: none is a marker.
func gatewayOutgoing(h http.Header) metadata.MD {
	md := metadata.MD{}
	for k, vals := range h {
		rest, ok := strings.CutPrefix(textproto.CanonicalMIMEHeaderKey(k), "Grpc-Metadata-")
		if !ok || rest == "" {
			continue
		}
		md.Append(rest, vals...)
	}
	return md
}

// deepForm reports whether an HTTP header named k is, under any number
// of grpc-gateway prefixes (any case, '-' or '_'), one that some hop
// reads as a sandbox marker or another tool's routing key: the dedicated
// header, baggage holding one of ours or a foreign key, a header named as
// one of our baggage keys (plain, uberctx-, ot-baggage-), Signadot's
// header forms. The test's own judge, independent of the codec.
func deepForm(k string, vals []string) bool {
	n := strings.ReplaceAll(strings.ToLower(k), "_", "-")
	for {
		rest, ok := strings.CutPrefix(n, "grpc-metadata-")
		if !ok {
			break
		}
		n = rest
	}
	switch n {
	case "sandbox-id", "uberctx-sd-routing-key", "ot-baggage-sd-routing-key":
		return true
	case "baggage":
		all := strings.Join(vals, ",")
		return strings.Contains(all, "sandbox.") || strings.Contains(all, "sd-routing-key") || strings.Contains(all, "okteto-divert")
	}
	for _, p := range []string{"", "uberctx-", "ot-baggage-"} {
		for _, key := range propagation.Default().Keys() {
			if n == p+key {
				return true
			}
		}
	}
	return false
}

// TestDoubledGatewayPrefixChain: grpc-gateway removes one Grpc-Metadata-
// prefix per hop. An untrusted client's Grpc-Metadata-Grpc-Metadata-Sandbox-Id
// passed the edge (httpmw.NewHandler) untouched, as nothing it reads as a
// marker; the gateway behind it made it gRPC metadata
// grpc-metadata-sandbox-id on a loopback call, which the gRPC server
// (grpcmw, trusting loopback) keeps from a trusted peer; its handler
// copied its metadata onto an outgoing HTTP request, and the next HTTP
// hop (httpmw, trusting loopback) read Grpc-Metadata-Sandbox-Id as ours
// and ran the request in sandbox pr-1, or refused it (400) for an actor
// key header, with no audit record at the edge. Every doubled or tripled
// form (any case, any marker or foreign header, baggage) is stripped and
// audited at the edge: no hop behind it runs in a sandbox, refuses the
// request, or receives a header that a later hop may read as a marker.
func TestDoubledGatewayPrefixChain(t *testing.T) {
	var mu sync.Mutex
	type hop struct {
		sandbox string
		status  int
		header  http.Header
	}
	var last hop

	// sink: the next HTTP hop, trusting loopback.
	sink := httptest.NewServer(mustHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		mu.Lock()
		last.sandbox = s.ID
		last.header = r.Header.Clone()
		mu.Unlock()
	}), httpmw.WithTrustedNetworks(loopback)))
	t.Cleanup(sink.Close)

	// svc: a gRPC service, trusting loopback, whose handler copies its
	// incoming metadata onto its outgoing HTTP request, as it is or in
	// grpc-gateway's form.
	var prefixed bool
	svcLog, svcLogger := newAuditLog()
	svc := &grpctest.Service{Name: "svc", Forward: func(ctx context.Context) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, sink.URL, nil)
		if err != nil {
			return "", err
		}
		md, _ := metadata.FromIncomingContext(ctx)
		for k, vals := range md {
			if strings.HasPrefix(k, ":") || k == "content-type" || k == "user-agent" || k == "te" {
				continue
			}
			for _, v := range vals {
				if prefixed {
					req.Header.Add("Grpc-Metadata-"+k, v)
				} else {
					req.Header.Add(k, v)
				}
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		mu.Lock()
		last.status = resp.StatusCode
		mu.Unlock()
		return "", nil
	}}
	addr := start(t, svc, serverOpts(t, grpcmw.WithTrustedNetworks(loopback), grpcmw.WithLogger(svcLogger))...)
	client := testpb.NewTestServiceClient(dial(t, addr))

	// edge: httpmw in front of a gateway, trusting no client on loopback.
	edgeLog, edgeLogger := newAuditLog()
	gateway := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := metadata.NewOutgoingContext(r.Context(), gatewayOutgoing(r.Header))
		seen, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Write(seen.GetPayload().GetBody())
	})
	edge := httptest.NewServer(mustHandler(t, gateway, httpmw.WithTrustedNetworks(elsewhere), httpmw.WithLogger(edgeLogger)))
	t.Cleanup(edge.Close)
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)

	var inputs [][2]string
	for _, pre := range []string{"Grpc-Metadata-Grpc-Metadata-", "Grpc-Metadata-Grpc-Metadata-Grpc-Metadata-", "grpc-metadata-GRPC-METADATA-", "GRPC-METADATA-grpc-metadata-grpc-metadata-"} {
		inputs = append(inputs,
			[2]string{pre + "Sandbox-Id", "pr-1"},
			[2]string{pre + "Baggage", "sandbox.id=pr-1"},
			[2]string{pre + "Baggage", "foo=bar,sandbox.id=pr-1,sandbox.actor=mallory"},
			[2]string{pre + "Sandbox.id", "pr-1"},
			[2]string{pre + "Sandbox.actor", "mallory"},
			[2]string{pre + "Sandbox.origin", "x"},
			[2]string{pre + "Sandbox.ticket", "x"},
			[2]string{pre + "Uberctx-Sandbox.id", "pr-1"},
			[2]string{pre + "Ot-Baggage-Sandbox.actor", "mallory"},
			[2]string{pre + "Uberctx-Sd-Routing-Key", "x"},
			[2]string{pre + "Ot-Baggage-Sd-Routing-Key", "x"},
			[2]string{pre + "Baggage", "sd-routing-key=x"},
			[2]string{pre + "Sandbox_Id", "pr-1"},
		)
	}
	// Spelled as CGI-style hops read it (the gateway itself passes only
	// Grpc-Metadata-), and among 300 other headers.
	inputs = append(inputs,
		[2]string{"Grpc_Metadata_Grpc_Metadata_Sandbox_Id", "pr-1"},
		[2]string{"Grpc-Metadata-Grpc_Metadata_Sandbox_Id", "pr-1"},
		[2]string{"many:Grpc-Metadata-Grpc-Metadata-Sandbox-Id", "pr-1"},
		[2]string{"many:Grpc-Metadata-Grpc-Metadata-Baggage", "foo=bar,sandbox.id=pr-1"},
	)
	for _, in := range inputs {
		for _, mode := range []bool{false, true} {
			name := fmt.Sprintf("%s: %s/copied plain", in[0], in[1])
			if mode {
				name = fmt.Sprintf("%s: %s/copied with prefix", in[0], in[1])
			}
			t.Run(name, func(t *testing.T) {
				mu.Lock()
				prefixed = mode
				last = hop{}
				mu.Unlock()
				before, svcBefore := len(edgeLog.Decisions()), len(svcLog.Decisions())
				resp := sendEdge(t, edge.URL, in[0], in[1])
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("edge: status %d", resp.StatusCode)
				}
				var seen grpctest.Seen
				if b, err := io.ReadAll(resp.Body); err != nil {
					t.Fatal(err)
				} else if seen, err = grpctest.Parse(string(b)); err != nil {
					t.Fatal(err)
				}
				if seen.Sandbox != "" {
					t.Errorf("the gRPC service ran in sandbox %q", seen.Sandbox)
				}
				mu.Lock()
				got := last
				mu.Unlock()
				if got.status != http.StatusOK {
					t.Errorf("the next HTTP hop answered %d to a production request", got.status)
				}
				if got.sandbox != "" {
					t.Errorf("the next HTTP hop ran in sandbox %q", got.sandbox)
				}
				for k, v := range got.header {
					if deepForm(k, v) {
						t.Errorf("the next HTTP hop received %s: %q, a marker to a hop behind it", k, v)
					}
				}
				if d := edgeLog.Decisions()[before:]; len(d) != 1 || d[0] != string(audit.Stripped) {
					t.Errorf("edge decisions %q, want one %q", d, audit.Stripped)
				}
				if d := svcLog.Decisions()[svcBefore:]; len(d) != 0 {
					t.Errorf("gRPC service decisions %q, want none", d)
				}
			})
		}
	}

	// The control: a trusted client's doubled form is kept (for a
	// gateway behind a gateway) and not read at the edge.
	t.Run("trusted client keeps a doubled form", func(t *testing.T) {
		trustedEdge := httptest.NewServer(mustHandler(t, gateway, httpmw.WithTrustedNetworks(loopback)))
		t.Cleanup(trustedEdge.Close)
		mu.Lock()
		prefixed, last = true, hop{}
		mu.Unlock()
		resp := sendEdge(t, trustedEdge.URL, "Grpc-Metadata-Grpc-Metadata-Sandbox-Id", "pr-1")
		io.Copy(io.Discard, resp.Body)
		mu.Lock()
		got := last
		mu.Unlock()
		if resp.StatusCode != http.StatusOK || got.sandbox != "" || got.header.Get("Grpc-Metadata-Grpc-Metadata-Sandbox-Id") != "pr-1" {
			t.Errorf("status %d, next hop sandbox %q, headers %v; want 200, none, the doubled form kept", resp.StatusCode, got.sandbox, got.header)
		}
	})
}

// sendEdge sends k: v, and 300 other headers when k starts with "many:".
func sendEdge(t *testing.T, url, k, v string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rest, ok := strings.CutPrefix(k, "many:"); ok {
		k = rest
		for i := range 300 {
			req.Header.Set(fmt.Sprintf("X-Filler-%03d", i), "v")
		}
	}
	req.Header[k] = []string{v} // as sent, not canonicalised
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func mustHandler(t *testing.T, h http.Handler, opts ...httpmw.HandlerOption) http.Handler {
	t.Helper()
	hh, err := httpmw.NewHandler(h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return hh
}
