package propagation_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

var (
	key1 = propagation.Key{ID: "k1", Secret: []byte(strings.Repeat("1", 32))}
	key2 = propagation.Key{ID: "k2", Secret: []byte(strings.Repeat("2", 32))}
)

func TestTicket(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	s := propagation.Sandbox{ID: "pr-42", Actor: "alice", Origin: "PR 42"}
	signer, err := propagation.NewSigner(key1)
	if err != nil {
		t.Fatal(err)
	}
	ticket, err := signer.SignUntil(s, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	v, err := propagation.NewVerifier(key2, key1) // rotation: both accepted
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifyAt(s, ticket, now); err != nil {
		t.Fatalf("valid ticket rejected: %v", err)
	}
	tamperedSig := ticket[:len(ticket)-2] + "AA"
	if tamperedSig == ticket {
		tamperedSig = ticket[:len(ticket)-2] + "BB"
	}
	parts := strings.Split(ticket, ".")
	laterExp := parts[0] + "." + parts[1] + ".9999999999." + parts[3]

	tests := []struct {
		name   string
		s      propagation.Sandbox
		ticket string
		at     time.Time
		want   error
	}{
		{"other actor", propagation.Sandbox{ID: "pr-42", Actor: "mallory", Origin: "PR 42"}, ticket, now, propagation.ErrTicketInvalid},
		{"no actor", propagation.Sandbox{ID: "pr-42", Origin: "PR 42"}, ticket, now, propagation.ErrTicketInvalid},
		{"other id", propagation.Sandbox{ID: "pr-43", Actor: "alice", Origin: "PR 42"}, ticket, now, propagation.ErrTicketInvalid},
		{"other origin", propagation.Sandbox{ID: "pr-42", Actor: "alice"}, ticket, now, propagation.ErrTicketInvalid},
		{"tampered signature", s, tamperedSig, now, propagation.ErrTicketInvalid},
		{"extended expiry", s, laterExp, now, propagation.ErrTicketInvalid},
		{"expired", s, ticket, now.Add(time.Hour), propagation.ErrTicketExpired},
		{"unknown key", s, strings.Replace(ticket, "v1.k1.", "v1.k9.", 1), now, propagation.ErrUnknownKey},
		{"garbage", s, "hello", now, propagation.ErrTicketInvalid},
		{"bad version", s, "v2" + ticket[2:], now, propagation.ErrTicketInvalid},
		{"bad base64", s, parts[0] + "." + parts[1] + "." + parts[2] + ".***", now, propagation.ErrTicketInvalid},
	}
	for _, tt := range tests {
		if err := v.VerifyAt(tt.s, tt.ticket, tt.at); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}

	only2, _ := propagation.NewVerifier(key2)
	if err := only2.VerifyAt(s, ticket, now); !errors.Is(err, propagation.ErrUnknownKey) {
		t.Errorf("retired key accepted: %v", err)
	}
	// A key with the same ID but another secret is a forgery.
	forged, _ := propagation.NewVerifier(propagation.Key{ID: "k1", Secret: []byte(strings.Repeat("x", 32))})
	if err := forged.VerifyAt(s, ticket, now); !errors.Is(err, propagation.ErrTicketInvalid) {
		t.Errorf("ticket verified under another secret: %v", err)
	}
}

func TestTicketKeys(t *testing.T) {
	for _, k := range []propagation.Key{
		{ID: "", Secret: key1.Secret},
		{ID: "bad.id", Secret: key1.Secret},
		{ID: "short", Secret: []byte("too short")},
	} {
		if _, err := propagation.NewSigner(k); err == nil {
			t.Errorf("NewSigner(%q) accepted a bad key", k.ID)
		}
	}
	if _, err := propagation.NewVerifier(); err == nil {
		t.Error("NewVerifier with no keys succeeded")
	}
	if _, err := propagation.NewVerifier(key1, key1); err == nil {
		t.Error("NewVerifier with a duplicate key ID succeeded")
	}
	signer, _ := propagation.NewSigner(key1)
	if _, err := signer.Sign(propagation.Sandbox{ID: "Bad"}, time.Hour); !errors.Is(err, propagation.ErrInvalidID) {
		t.Errorf("signed an invalid sandbox: %v", err)
	}
}

func TestInjectTicket(t *testing.T) {
	c, err := propagation.NewCodec(propagation.WithTicketKey("x.ticket"))
	if err != nil {
		t.Fatal(err)
	}
	s := propagation.Sandbox{ID: "pr-42", Actor: "alice"}
	signer, _ := propagation.NewSigner(key1)
	ticket, _ := signer.Sign(s, time.Hour)
	h := c.HTTPHeader(s)
	c.InjectTicket("stale", otelprop.HeaderCarrier(h))
	c.InjectTicket(ticket, otelprop.HeaderCarrier(h))
	m, err := c.Read(otelprop.HeaderCarrier(h))
	if err != nil || m.Sandbox != s || m.Ticket != ticket {
		t.Fatalf("read %+v, %v from %v", m, err, h)
	}
	v, _ := propagation.NewVerifier(key1)
	if err := v.Verify(m.Sandbox, m.Ticket); err != nil {
		t.Fatal(err)
	}
}
