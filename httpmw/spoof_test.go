package httpmw_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Outcomes of the spoofing table: the audit decision, and what the handler
// sees.
const (
	none     = ""                     // no markers: production traffic, no audit record
	admitted = string(audit.Admitted) // the handler sees the sandbox
	stripped = string(audit.Stripped) // the handler sees production traffic without markers
	rejected = string(audit.Rejected) // 400, the handler is not called
)

var ticketClock = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func ticketKeys(t *testing.T) (*propagation.Signer, *propagation.Signer, *propagation.Verifier) {
	t.Helper()
	k1 := propagation.Key{ID: "k1", Secret: []byte(strings.Repeat("s", 32))}
	k2 := propagation.Key{ID: "k2", Secret: []byte(strings.Repeat("t", 32))}
	s1, err := propagation.NewSigner(k1)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := propagation.NewSigner(k2)
	if err != nil {
		t.Fatal(err)
	}
	v, err := propagation.NewVerifier(k1)
	if err != nil {
		t.Fatal(err)
	}
	return s1, s2, v
}

func members(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d=v%d", prefix, i, i)
	}
	return out
}

// markerLike are headers a hop other than ours may read as a sandbox
// marker: our baggage key as a header name, Signadot's header forms.
var markerLike = []string{"Sandbox.id", "Uberctx-Sd-Routing-Key", "Ot-Baggage-Sd-Routing-Key", "Sandbox_id", "Uberctx_sd_routing_key"}

func bag(ms ...string) string { return "Baggage: " + strings.Join(ms, ",") }

func TestSpoofing(t *testing.T) {
	signer, otherSigner, verifier := ticketKeys(t)
	alice := propagation.Sandbox{ID: "pr-1", Actor: "alice"}
	sign := func(s *propagation.Signer, sb propagation.Sandbox, exp time.Time) string {
		tk, err := s.SignUntil(sb, exp)
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	valid := sign(signer, alice, ticketClock.Add(time.Hour))
	expired := sign(signer, alice, ticketClock.Add(-time.Second))
	unknownKey := sign(otherSigner, alice, ticketClock.Add(time.Hour))

	pfx := netip.MustParsePrefix
	configs := map[string][]httpmw.HandlerOption{
		// The test client always connects from 127.0.0.1.
		"default":   nil,
		"peer":      {httpmw.WithTrustedNetworks(pfx("127.0.0.0/8"))},
		"other":     {httpmw.WithTrustedNetworks(pfx("10.0.0.0/8"), pfx("fd00::/8"))},
		"other+xff": {httpmw.WithTrustedNetworks(pfx("10.0.0.0/8")), httpmw.WithTrustedHops(1)},
		"xff1": {httpmw.WithTrustedNetworks(pfx("127.0.0.1/32"), pfx("10.0.0.0/8"), pfx("2001:db8:a::/48")),
			httpmw.WithTrustedHops(1)},
		"xff2": {httpmw.WithTrustedNetworks(pfx("127.0.0.1/32"), pfx("10.0.0.0/8")), httpmw.WithTrustedHops(2)},
		"ticket": {httpmw.WithTrustedNetworks(pfx("10.0.0.0/8")), httpmw.WithVerifier(verifier),
			httpmw.WithClock(func() time.Time { return ticketClock })},
		"peer+ticket": {httpmw.WithTrustedNetworks(pfx("127.0.0.0/8")), httpmw.WithVerifier(verifier),
			httpmw.WithClock(func() time.Time { return ticketClock })},
	}
	hidden := append(append(members("a", 30), "sandbox.id=pr-1"), members("z", 20)...)

	cases := []struct {
		name    string
		cfg     string
		headers []string
		outcome string
		id      string   // the sandbox the handler sees when admitted
		baggage []string // the baggage the handler sees (stripped, none)
		text    string   // in the 400 body (rejected) or the audit reason (stripped)
		kept    []string // marker-like headers the handler must still see
	}{
		// Untrusted peers: markers are stripped, whatever they say.
		{name: "untrusted peer without markers", cfg: "other", headers: []string{"Baggage: foo=bar"}, outcome: none, baggage: []string{"foo=bar"}},
		{name: "untrusted peer, header", cfg: "other", headers: []string{"Sandbox-Id: pr-1"}, outcome: stripped, text: "peer 127.0.0.1:"},
		{name: "untrusted peer, mixed-case header name", cfg: "other", headers: []string{"sAnDbOx-iD: pr-1"}, outcome: stripped},
		{name: "untrusted peer, our members among foreign ones on two lines", cfg: "other",
			headers: []string{"Baggage: a=1, sandbox.id=pr-1;prop=x, b=2", "Baggage: sandbox.actor=mallory,c=3"},
			outcome: stripped, baggage: []string{"a=1,b=2,c=3"}},
		{name: "untrusted peer, malformed markers are stripped, not rejected", cfg: "other", headers: []string{"Sandbox-Id: NOT A LABEL", "Baggage: sandbox.id=%zz"}, outcome: stripped},
		{name: "untrusted peer, ticket and origin members too", cfg: "other", headers: []string{bag("sandbox.ticket="+valid, "k=v", "sandbox.origin=x")}, outcome: stripped, baggage: []string{"k=v"}},
		{name: "nothing trusted by default, loopback peer", cfg: "default", headers: []string{"Sandbox-Id: pr-1"}, outcome: stripped},
		{name: "untrusted peer claiming a trusted client in XFF", cfg: "other+xff", headers: []string{"Sandbox-Id: pr-1", "X-Forwarded-For: 10.0.0.5"}, outcome: stripped, text: "peer 127.0.0.1"},
		{name: "untrusted peer, ticket but no verifier", cfg: "other", headers: []string{bag("sandbox.id=pr-1", "sandbox.actor=alice", "sandbox.ticket="+valid)}, outcome: stripped},

		// A trusted peer: readable markers are admitted, the rest rejected.
		{name: "trusted peer, header", cfg: "peer", headers: []string{"Sandbox-Id: pr-1"}, outcome: admitted, id: "pr-1"},
		{name: "trusted peer, baggage only", cfg: "peer", headers: []string{"Baggage: sandbox.id=pr-1,sandbox.actor=alice%40example.com"}, outcome: admitted, id: "pr-1"},
		{name: "mixed-case header name", cfg: "peer", headers: []string{"SANDBOX-ID: pr-1"}, outcome: admitted, id: "pr-1"},
		{name: "duplicated header, same value", cfg: "peer", headers: []string{"Sandbox-Id: pr-1", "sandbox-id: pr-1"}, outcome: admitted, id: "pr-1"},
		{name: "duplicated header, different values", cfg: "peer", headers: []string{"Sandbox-Id: pr-1", "sandbox-id: pr-2"}, outcome: rejected, text: "conflicting"},
		{name: "two values on one header line", cfg: "peer", headers: []string{"Sandbox-Id: pr-1, pr-2"}, outcome: rejected, text: "invalid sandbox ID"},
		{name: "empty header value is an unreadable marker", cfg: "peer", headers: []string{"Sandbox-Id: "}, outcome: rejected, text: "is empty"},
		{name: "untrusted peer, empty header value is stripped", cfg: "other", headers: []string{"Sandbox-Id: "}, outcome: stripped},
		{name: "mixed-case baggage key is not ours", cfg: "peer", headers: []string{"Baggage: Sandbox.Id=pr-1"}, outcome: none, baggage: []string{"Sandbox.Id=pr-1"}},
		{name: "our member hidden among 50 foreign members", cfg: "peer", headers: []string{bag(hidden...)}, outcome: admitted, id: "pr-1"},
		{name: "our member after malformed foreign members", cfg: "peer", headers: []string{"Baggage: junk;;;, =x,sandbox.id = pr-1 ;p"}, outcome: admitted, id: "pr-1"},
		{name: "oversized baggage: 65 members", cfg: "peer", headers: []string{bag(append(members("k", 64), "sandbox.id=pr-1")...)}, outcome: rejected, text: "W3C limits"},
		{name: "oversized baggage: 9000 bytes", cfg: "peer", headers: []string{bag("sandbox.id=pr-1", "big="+strings.Repeat("x", 9000))}, outcome: rejected, text: "W3C limits"},
		{name: "oversized baggage over two lines", cfg: "peer", headers: []string{bag("a=" + strings.Repeat("x", 4500)), bag("sandbox.id=pr-1", "b="+strings.Repeat("y", 4500))}, outcome: rejected, text: "W3C limits"},
		{name: "oversized foreign baggage without our member passes", cfg: "peer", headers: []string{bag(members("k", 70)...)}, outcome: none, baggage: []string{strings.Join(members("k", 70), ",")}},
		{name: "percent-encoded ID decoding to a valid ID", cfg: "peer", headers: []string{"Baggage: sandbox.id=pr%2D1"}, outcome: admitted, id: "pr-1"},
		{name: "percent-encoded upper-case ID", cfg: "peer", headers: []string{"Baggage: sandbox.id=%50R-1"}, outcome: rejected, text: "invalid sandbox ID"},
		{name: "percent-encoded NUL in ID", cfg: "peer", headers: []string{"Baggage: sandbox.id=pr-1%00"}, outcome: rejected, text: "invalid sandbox ID"},
		{name: "truncated percent-encoding", cfg: "peer", headers: []string{"Baggage: sandbox.id=pr%2"}, outcome: rejected, text: "malformed"},
		// Issue 13: spellings of our keys that another parser reads as ours.
		{name: "percent-encoded key reads as ours to JS and Python", cfg: "peer", headers: []string{"Baggage: sandbox%2Eid=pr-1"}, outcome: rejected, text: "lenient parser"},
		{name: "no-break space before the key", cfg: "peer", headers: []string{"Baggage: \u00a0sandbox.id=pr-1"}, outcome: rejected, text: "lenient parser"},
		{name: "lookalike next to our member", cfg: "peer", headers: []string{"Baggage: sandbox.id=pr-1,\u3000sandbox.id=pr-2"}, outcome: rejected, text: "lenient parser"},
		{name: "member with properties OpenTelemetry drops", cfg: "peer", headers: []string{"Baggage: sandbox.id=pr-1;bad prop"}, outcome: rejected, text: "properties"},
		{name: "untrusted peer, no-break space lookalike is stripped", cfg: "other", headers: []string{"Baggage: a=1,\u00a0sandbox.id=pr-1,+sandbox.actor=x,sandbox%252Eorigin=y,b=2"}, outcome: stripped, baggage: []string{"a=1,b=2"}},
		{name: "untrusted peer, Signadot's Jaeger header alone", cfg: "other", headers: []string{"Uberctx-Sd-Routing-Key: x"}, outcome: stripped, text: "foreign routing keys"},
		{name: "untrusted peer, Signadot's OpenTracing header alone", cfg: "other", headers: []string{"Ot-Baggage-Sd-Routing-Key: x"}, outcome: stripped, text: "foreign routing keys"},
		{name: "untrusted peer, Signadot's baggage key alone", cfg: "other", headers: []string{"Baggage: a=1,sd-routing-key=x"}, outcome: stripped, baggage: []string{"a=1"}, text: "foreign routing keys"},
		{name: "untrusted peer, Okteto's key alone, percent-encoded", cfg: "other", headers: []string{"Baggage: okteto%2Ddivert=y,b=2"}, outcome: stripped, baggage: []string{"b=2"}, text: "foreign routing keys"},
		{name: "nothing trusted, foreign key alone", cfg: "default", headers: []string{"Baggage: \u00a0sd-routing-key=x"}, outcome: stripped, text: "foreign routing keys"},
		{name: "trusted peer, foreign keys alone are kept", cfg: "peer", headers: []string{"Uberctx-Sd-Routing-Key: x", "Baggage: sd-routing-key=x"}, outcome: none, baggage: []string{"sd-routing-key=x"}, kept: []string{"Uberctx-Sd-Routing-Key"}},
		{name: "untrusted peer, CGI spelling Sandbox_Id alone", cfg: "other", headers: []string{"Sandbox_Id: pr-1"}, outcome: stripped, text: "foreign routing keys"},
		{name: "untrusted peer, CGI spelling of Signadot's header", cfg: "other", headers: []string{"Uberctx_sd_routing_key: x"}, outcome: stripped, text: "foreign routing keys"},
		{name: "untrusted peer, CGI spelling beside our markers", cfg: "other", headers: []string{"Sandbox-Id: pr-1", "Sandbox_Id: pr-1"}, outcome: stripped},
		{name: "trusted peer, header named sandbox.id alone", cfg: "peer", headers: []string{"sandbox.id: pr-1"}, outcome: rejected, text: "named as a baggage member key"},
		{name: "untrusted peer, header named sandbox.id alone", cfg: "other", headers: []string{"sandbox.id: pr-1"}, outcome: stripped},
		{name: "untrusted peer, foreign routing keys go with ours", cfg: "other", headers: []string{"Sandbox-Id: pr-1", "Uberctx-Sd-Routing-Key: x", "Baggage: a=1,sd-routing-key=x,okteto-divert=y"}, outcome: stripped, baggage: []string{"a=1"}},
		{name: "encoded CRLF in actor", cfg: "peer", headers: []string{"Baggage: sandbox.id=pr-1,sandbox.actor=eve%0D%0AX-Admin:%20true"}, outcome: rejected, text: "invalid sandbox actor"},
		{name: "our member without a value", cfg: "peer", headers: []string{"Baggage: a=1,sandbox.id"}, outcome: rejected, text: "no value"},
		{name: "actor without an ID", cfg: "peer", headers: []string{"Baggage: sandbox.actor=alice"}, outcome: rejected, text: "without a sandbox ID"},
		{name: "header and baggage conflict", cfg: "peer", headers: []string{"Sandbox-Id: pr-1", "Baggage: sandbox.id=pr-2"}, outcome: rejected, text: "conflicting"},
		{name: "header and baggage agree", cfg: "peer", headers: []string{"Sandbox-Id: pr-1", "Baggage: sandbox.id=pr-1"}, outcome: admitted, id: "pr-1"},
		{name: "baggage ID twice, different", cfg: "peer", headers: []string{"Baggage: sandbox.id=pr-1,sandbox.id=pr-2"}, outcome: rejected, text: "conflicting"},

		// Behind one trusted proxy (127.0.0.1): the client is the rightmost XFF entry.
		{name: "trusted proxy, trusted client", cfg: "xff1", headers: []string{"Sandbox-Id: pr-1", "X-Forwarded-For: 10.0.0.5"}, outcome: admitted, id: "pr-1"},
		{name: "trusted proxy, trusted IPv6 client", cfg: "xff1", headers: []string{"Sandbox-Id: pr-1", "X-Forwarded-For: 2001:db8:a::7"}, outcome: admitted, id: "pr-1"},
		{name: "trusted proxy, client with port", cfg: "xff1", headers: []string{"Sandbox-Id: pr-1", "X-Forwarded-For: 10.0.0.5:4711"}, outcome: admitted, id: "pr-1"},
		{name: "trusted proxy, untrusted client", cfg: "xff1", headers: []string{"Sandbox-Id: pr-1", "X-Forwarded-For: 203.0.113.9"}, outcome: stripped, text: "client 203.0.113.9"},
		{name: "forged trusted address leftmost", cfg: "xff1", headers: []string{"Sandbox-Id: pr-1", "X-Forwarded-For: 10.0.0.5, 203.0.113.9"}, outcome: stripped, text: "client 203.0.113.9"},
		{name: "forged trusted address on an earlier XFF line", cfg: "xff1", headers: []string{"Sandbox-Id: pr-1", "X-Forwarded-For: 10.0.0.5", "x-forwarded-for: 203.0.113.9"}, outcome: stripped},
		{name: "IPv4-mapped untrusted client", cfg: "xff1", headers: []string{"Sandbox-Id: pr-1", "X-Forwarded-For: ::ffff:203.0.113.9"}, outcome: stripped},
		{name: "no XFF behind a trusted hop", cfg: "xff1", headers: []string{"Sandbox-Id: pr-1"}, outcome: stripped, text: "0 entries"},
		{name: "unparsable XFF entry", cfg: "xff1", headers: []string{"Sandbox-Id: pr-1", "X-Forwarded-For: 10.0.0.5, unknown"}, outcome: stripped, text: "not an IP address"},
		{name: "trusted proxy, untrusted client, malformed markers", cfg: "xff1", headers: []string{"Sandbox-Id: PR 1", "X-Forwarded-For: 203.0.113.9"}, outcome: stripped},
		{name: "trusted client, malformed markers", cfg: "xff1", headers: []string{"Sandbox-Id: PR 1", "X-Forwarded-For: 10.0.0.5"}, outcome: rejected, text: "invalid sandbox ID"},
		// Two trusted hops: the client is the second entry from the right.
		{name: "two hops, client second from right", cfg: "xff2", headers: []string{"Sandbox-Id: pr-1", "X-Forwarded-For: 203.0.113.9, 10.0.0.5, 10.0.0.6"}, outcome: admitted, id: "pr-1"},
		{name: "two hops, one entry", cfg: "xff2", headers: []string{"Sandbox-Id: pr-1", "X-Forwarded-For: 10.0.0.5"}, outcome: stripped, text: "1 entries"},
		{name: "two hops, forged trusted address leftmost", cfg: "xff2", headers: []string{"Sandbox-Id: pr-1", "X-Forwarded-For: 10.0.0.5, 203.0.113.9, 10.0.0.6"}, outcome: stripped, text: "client 203.0.113.9"},

		// Signed tickets, from a peer that is not trusted by network.
		{name: "valid ticket", cfg: "ticket", headers: []string{bag("sandbox.id=pr-1", "sandbox.actor=alice", "sandbox.ticket="+valid)}, outcome: admitted, id: "pr-1"},
		{name: "valid ticket with the header too", cfg: "ticket", headers: []string{"Sandbox-Id: pr-1", bag("sandbox.id=pr-1", "sandbox.actor=alice", "sandbox.ticket="+valid)}, outcome: admitted, id: "pr-1"},
		{name: "expired ticket", cfg: "ticket", headers: []string{bag("sandbox.id=pr-1", "sandbox.actor=alice", "sandbox.ticket="+expired)}, outcome: rejected, text: "expired"},
		{name: "ticket for another sandbox", cfg: "ticket", headers: []string{bag("sandbox.id=pr-2", "sandbox.actor=alice", "sandbox.ticket="+valid)}, outcome: rejected, text: "invalid sandbox ticket"},
		{name: "actor disagrees with the ticket", cfg: "ticket", headers: []string{bag("sandbox.id=pr-1", "sandbox.actor=mallory", "sandbox.ticket="+valid)}, outcome: rejected, text: "invalid sandbox ticket"},
		{name: "actor dropped from a ticketed request", cfg: "ticket", headers: []string{bag("sandbox.id=pr-1", "sandbox.ticket="+valid)}, outcome: rejected, text: "invalid sandbox ticket"},
		{name: "tampered signature", cfg: "ticket", headers: []string{bag("sandbox.id=pr-1", "sandbox.actor=alice", "sandbox.ticket="+valid[:len(valid)-2]+"AA")}, outcome: rejected, text: "invalid sandbox ticket"},
		{name: "ticket signed with an unknown key", cfg: "ticket", headers: []string{bag("sandbox.id=pr-1", "sandbox.actor=alice", "sandbox.ticket="+unknownKey)}, outcome: rejected, text: "unknown key"},
		{name: "garbage ticket", cfg: "ticket", headers: []string{bag("sandbox.id=pr-1", "sandbox.ticket=hello")}, outcome: rejected, text: "invalid sandbox ticket"},
		{name: "valid ticket but header conflicts", cfg: "ticket", headers: []string{"Sandbox-Id: pr-9", bag("sandbox.id=pr-1", "sandbox.actor=alice", "sandbox.ticket="+valid)}, outcome: rejected, text: "conflicting"},
		{name: "no ticket from an untrusted peer", cfg: "ticket", headers: []string{bag("sandbox.id=pr-1", "sandbox.actor=alice")}, outcome: stripped},
		{name: "trusted peer, invalid ticket", cfg: "peer+ticket", headers: []string{bag("sandbox.id=pr-1", "sandbox.actor=alice", "sandbox.ticket="+expired)}, outcome: rejected, text: "expired"},
		{name: "trusted peer, no ticket", cfg: "peer+ticket", headers: []string{"Sandbox-Id: pr-1"}, outcome: admitted, id: "pr-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts, ok := configs[tc.cfg]
			if !ok {
				t.Fatalf("no config %q", tc.cfg)
			}
			alog, logger := newAuditLog()
			var calls atomic.Int32
			var got seen
			var others []string
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				s, _ := propagation.FromContext(r.Context())
				got = seen{Sandbox: s.ID, Actor: s.Actor, Header: r.Header.Values("Sandbox-Id"), Baggage: r.Header.Values("Baggage")}
				others = nil
				for _, k := range markerLike {
					if r.Header.Get(k) != "" {
						others = append(others, k)
					}
				}
			})
			srv := httptest.NewServer(must(httpmw.NewHandler(h, append(slices.Clone(opts), httpmw.WithLogger(logger))...)))
			defer srv.Close()

			resp := sendRaw(t, srv, tc.headers)
			recs := alog.Records()
			if tc.outcome == rejected {
				if resp.status != http.StatusBadRequest || calls.Load() != 0 {
					t.Fatalf("status %d, handler called %d times; want 400 and not called", resp.status, calls.Load())
				}
				if !strings.Contains(resp.body, tc.text) || !strings.HasPrefix(resp.contentType, "text/plain") {
					t.Errorf("400 body %q (%s); want text/plain containing %q", resp.body, resp.contentType, tc.text)
				}
			} else {
				if resp.status != http.StatusOK || calls.Load() != 1 {
					t.Fatalf("status %d (%q), handler called %d times; want 200, called once", resp.status, resp.body, calls.Load())
				}
				if got.Sandbox != tc.id {
					t.Errorf("handler saw sandbox %q; want %q", got.Sandbox, tc.id)
				}
				if tc.outcome == stripped && len(got.Header) != 0 {
					t.Errorf("stripped request still has Sandbox-Id %q", got.Header)
				}
				if !slices.Equal(others, tc.kept) {
					t.Errorf("handler saw marker-like headers %q; want %q", others, tc.kept)
				}
				if (tc.outcome == stripped || tc.baggage != nil) && !slices.Equal(got.Baggage, tc.baggage) {
					t.Errorf("handler saw baggage %q; want %q", got.Baggage, tc.baggage)
				}
			}
			if tc.outcome == none {
				if len(recs) != 0 {
					t.Errorf("audit records %v; want none", recs)
				}
				return
			}
			if len(recs) != 1 {
				t.Fatalf("audit records %v; want one %s", recs, tc.outcome)
			}
			rec := recs[0]
			if rec[audit.KeyDecision] != tc.outcome || rec[audit.KeyProtocol] != audit.HTTP || !strings.HasPrefix(rec[audit.KeyPeer], "127.0.0.1:") {
				t.Errorf("audit record %v; want decision %s, protocol http, peer 127.0.0.1", rec, tc.outcome)
			}
			if tc.outcome == admitted && rec[audit.KeyID] != tc.id {
				t.Errorf("audit sandbox.id %q; want %q", rec[audit.KeyID], tc.id)
			}
			if tc.outcome == stripped && !strings.Contains(rec[audit.KeyReason], tc.text) {
				t.Errorf("audit reason %q; want it to contain %q", rec[audit.KeyReason], tc.text)
			}
			if wantLevel := map[string]string{admitted: "INFO", stripped: "WARN", rejected: "WARN"}[tc.outcome]; rec["level"] != wantLevel {
				t.Errorf("audit level %s; want %s", rec["level"], wantLevel)
			}
		})
	}
}
