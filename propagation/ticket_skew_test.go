package propagation_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestVerifierClockSkew: a ticket issued for the maximum lifetime by a
// signer whose clock runs a little ahead of the verifier's (any real
// fleet's clocks differ by milliseconds, and expiries are whole seconds)
// is accepted; the allowance widens the lifetime check only, never the
// expiry, and WithClockSkew(0) takes it away.
func TestVerifierClockSkew(t *testing.T) {
	signer, _ := propagation.NewSigner(key1)
	v, _ := propagation.NewVerifier(key1)
	sb := propagation.Sandbox{ID: "pr-1", Actor: "alice"}
	now := time.Unix(1_800_000_000, 0)
	if got := v.ClockSkew(); got != propagation.DefaultTicketClockSkew || got <= 0 {
		t.Fatalf("default ClockSkew %v, want DefaultTicketClockSkew (%v) > 0", got, propagation.DefaultTicketClockSkew)
	}

	sign := func(exp time.Time) string {
		tk, err := signer.SignUntil(sb, exp)
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	// Issued for the maximum lifetime by a clock 1 ms, 1 s and the whole
	// allowance ahead: accepted.
	for _, ahead := range []time.Duration{time.Millisecond, time.Second, propagation.DefaultTicketClockSkew} {
		issued := now.Add(ahead)
		if err := v.VerifyAt(sb, sign(issued.Add(propagation.DefaultMaxTicketLifetime)), now); err != nil {
			t.Errorf("max-lifetime ticket from a signer %v ahead: %v", ahead, err)
		}
	}
	// Past the allowance: refused, and the message says how much was
	// allowed.
	over := sign(now.Add(propagation.DefaultMaxTicketLifetime + propagation.DefaultTicketClockSkew + time.Second))
	if err := v.VerifyAt(sb, over, now); !errors.Is(err, propagation.ErrTicketInvalid) || !strings.Contains(err.Error(), "clock skew") {
		t.Errorf("ticket past lifetime + skew: %v, want ErrTicketInvalid naming the clock skew allowed", err)
	}
	// The allowance never revives an expired ticket.
	if err := v.VerifyAt(sb, sign(now.Add(-time.Second)), now); !errors.Is(err, propagation.ErrTicketExpired) {
		t.Errorf("expired ticket: %v, want ErrTicketExpired", err)
	}
	if err := v.VerifyAt(sb, sign(now), now); !errors.Is(err, propagation.ErrTicketExpired) {
		t.Errorf("ticket expiring now: %v, want ErrTicketExpired", err)
	}

	strict, err := v.WithClockSkew(0)
	if err != nil || strict.ClockSkew() != 0 || v.ClockSkew() != propagation.DefaultTicketClockSkew {
		t.Fatalf("WithClockSkew(0): %v (copy %v, original %v)", err, strict.ClockSkew(), v.ClockSkew())
	}
	if err := strict.VerifyAt(sb, sign(now.Add(propagation.DefaultMaxTicketLifetime+time.Second)), now); !errors.Is(err, propagation.ErrTicketInvalid) {
		t.Errorf("no allowance, ticket 1 s past the lifetime: %v, want ErrTicketInvalid", err)
	}
	if err := strict.VerifyAt(sb, sign(now.Add(propagation.DefaultMaxTicketLifetime)), now); err != nil {
		t.Errorf("no allowance, max-lifetime ticket from the same clock: %v", err)
	}
	if _, err := v.WithClockSkew(-time.Second); err == nil {
		t.Error("WithClockSkew(-1s) accepted")
	}
	// Both settings are kept by each other's copies.
	week, _ := strict.WithMaxLifetime(7 * 24 * time.Hour)
	if week.ClockSkew() != 0 {
		t.Errorf("WithMaxLifetime dropped the clock skew: %v", week.ClockSkew())
	}
	loose, _ := week.WithClockSkew(time.Hour)
	if loose.MaxLifetime() != 7*24*time.Hour || loose.ClockSkew() != time.Hour {
		t.Errorf("WithClockSkew: lifetime %v, skew %v", loose.MaxLifetime(), loose.ClockSkew())
	}
}

// TestTicketKeyID: the key ID of a ticket's shape, "" for anything else.
func TestTicketKeyID(t *testing.T) {
	signer, _ := propagation.NewSigner(key2)
	tk, err := signer.Sign(propagation.Sandbox{ID: "pr-1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		tk:               "k2",
		"v1.k.1.sig":     "k",
		"v1..1.sig":      "",
		"v2.k.1.sig":     "",
		"v1.k.1":         "",
		"hello":          "",
		"":               "",
		"v1.k.1.s.extra": "k",
	} {
		if got := propagation.TicketKeyID(in); got != want {
			t.Errorf("TicketKeyID(%q) = %q, want %q", in, got, want)
		}
	}
}
