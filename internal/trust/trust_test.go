package trust_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/internal/trust"
	"github.com/sandboxkit/sandboxkit/propagation"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	key := propagation.Key{ID: "k", Secret: []byte(strings.Repeat("s", 32))}
	signer, _ := propagation.NewSigner(key)
	verifier, _ := propagation.NewVerifier(key)
	alice := propagation.Sandbox{ID: "pr-1", Actor: "alice"}
	good, _ := signer.SignUntil(alice, now.Add(time.Hour))
	expired, _ := signer.SignUntil(alice, now.Add(-time.Second))

	withTicket := trust.Policy{Verifier: verifier, Now: func() time.Time { return now }}
	readErr := propagation.ErrInvalidID
	for _, tt := range []struct {
		name    string
		p       trust.Policy
		m       propagation.Markers
		readErr error
		trusted bool
		want    trust.Verdict
		wantErr error
	}{
		{"no markers", trust.Policy{}, propagation.Markers{}, nil, false, trust.None, nil},
		{"default trusts nothing", trust.Policy{}, propagation.Markers{Found: true, Sandbox: alice}, nil, false, trust.Strip, trust.ErrUntrusted},
		{"trusted peer", trust.Policy{}, propagation.Markers{Found: true, Sandbox: alice}, nil, true, trust.Admit, nil},
		{"trusted peer, unreadable", trust.Policy{}, propagation.Markers{Found: true}, readErr, true, trust.Reject, readErr},
		{"untrusted peer, unreadable", trust.Policy{}, propagation.Markers{Found: true}, readErr, false, trust.Strip, trust.ErrUntrusted},
		{"valid ticket, untrusted peer", withTicket, propagation.Markers{Found: true, Sandbox: alice, Ticket: good}, nil, false, trust.Admit, nil},
		{"ticket for another actor", withTicket, propagation.Markers{Found: true, Sandbox: propagation.Sandbox{ID: "pr-1", Actor: "eve"}, Ticket: good}, nil, false, trust.Reject, propagation.ErrTicketInvalid},
		{"expired ticket, trusted peer", withTicket, propagation.Markers{Found: true, Sandbox: alice, Ticket: expired}, nil, true, trust.Reject, propagation.ErrTicketExpired},
		{"ticket with unreadable markers", withTicket, propagation.Markers{Found: true, Ticket: good}, readErr, false, trust.Reject, readErr},
		{"ticket without a verifier", trust.Policy{}, propagation.Markers{Found: true, Sandbox: alice, Ticket: good}, nil, false, trust.Strip, trust.ErrUntrusted},
	} {
		got, err := tt.p.Decide(&tt.m, tt.readErr, tt.trusted)
		if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
			t.Errorf("%s: Decide = %v, %v; want %v, %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestTrusted(t *testing.T) {
	p := trust.Policy{Networks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}}
	for addr, want := range map[string]bool{
		"10.1.2.3": true, "::ffff:10.1.2.3": true, "fd00::1": true,
		"11.0.0.1": false, "::1": false, "127.0.0.1": false,
	} {
		if got := p.Trusted(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Trusted(%s) = %v, want %v", addr, got, want)
		}
	}
	if p.Trusted(netip.Addr{}) {
		t.Error("an unknown peer is trusted")
	}
	if !(&trust.Policy{All: true}).Trusted(netip.Addr{}) {
		t.Error("All does not trust every peer")
	}
}

func TestNetworks(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   []netip.Prefix
		want []netip.Prefix
	}{
		{"masked", []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{"ipv6 masked", []netip.Prefix{netip.MustParsePrefix("fd00::1/8")}, []netip.Prefix{netip.MustParsePrefix("fd00::/8")}},
		{"mapped unmapped", []netip.Prefix{netip.MustParsePrefix("::ffff:10.1.2.3/104")}, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{"mapped host", []netip.Prefix{netip.MustParsePrefix("::ffff:127.0.0.1/128")}, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}},
		{"short mapped kept as IPv6", []netip.Prefix{netip.MustParsePrefix("::ffff:0.0.0.0/80")}, []netip.Prefix{netip.MustParsePrefix("::/80")}},
		{"none", nil, []netip.Prefix{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := trust.Networks(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
	if _, err := trust.Networks([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), {}}); !errors.Is(err, trust.ErrInvalidPrefix) {
		t.Fatalf("zero prefix: err = %v, want ErrInvalidPrefix", err)
	}
	// A mapped peer is trusted by the unmapped prefix it was given as.
	nets, _ := trust.Networks([]netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")})
	p := trust.Policy{Networks: nets}
	if !p.Trusted(netip.MustParseAddr("10.9.9.9")) || !p.Trusted(netip.MustParseAddr("::ffff:10.9.9.9")) {
		t.Fatal("mapped prefix does not trust its peers")
	}
	if p.Trusted(netip.MustParseAddr("11.0.0.1")) {
		t.Fatal("mapped prefix trusts a peer outside it")
	}
}
