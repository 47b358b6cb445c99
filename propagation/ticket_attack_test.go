package propagation_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestTicketExpiryEdges: the expiry a ticket carries, against the time it
// is checked at, at the edges: exactly now, the maximum lifetime ahead,
// the largest int64 (exp-now overflows for a clock before 1970, such as
// an unset time.Time), and spellings that are not the one decimal form.
func TestTicketExpiryEdges(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	s := propagation.Sandbox{ID: "pr-42", Actor: "alice"}
	signer, err := propagation.NewSigner(key1)
	if err != nil {
		t.Fatal(err)
	}
	v, err := propagation.NewVerifier(key1)
	if err != nil {
		t.Fatal(err)
	}
	at := func(exp time.Time) string {
		tk, err := signer.SignUntil(s, exp)
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	maxExp := at(time.Unix(math.MaxInt64, 0))
	if !strings.Contains(maxExp, "."+strconv.FormatInt(math.MaxInt64, 10)+".") {
		t.Fatalf("ticket %q does not expire at the largest int64", maxExp)
	}
	for _, tc := range []struct {
		name   string
		ticket string
		now    time.Time
		want   error
	}{
		{"a second ahead", at(now.Add(time.Second)), now, nil},
		{"exactly now", at(now), now, propagation.ErrTicketExpired},
		{"the maximum lifetime ahead", at(now.Add(propagation.DefaultMaxTicketLifetime)), now, nil},
		{"the maximum lifetime and clock skew ahead", at(now.Add(propagation.DefaultMaxTicketLifetime + propagation.DefaultTicketClockSkew)), now, nil},
		{"a second past the maximum lifetime and clock skew", at(now.Add(propagation.DefaultMaxTicketLifetime + propagation.DefaultTicketClockSkew + time.Second)), now, propagation.ErrTicketInvalid},
		{"largest expiry", maxExp, now, propagation.ErrTicketInvalid},
		{"largest expiry, zero clock", maxExp, time.Time{}, propagation.ErrTicketInvalid},
		{"largest expiry, clock at the smallest int64", maxExp, time.Unix(math.MinInt64/2, 0), propagation.ErrTicketInvalid},
		{"a day ahead, zero clock", at(time.Time{}.Add(time.Hour)), time.Time{}, propagation.ErrTicketInvalid},
	} {
		if err := v.VerifyAt(s, tc.ticket, tc.now); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Spellings of an expiry other than its one decimal form, signed or
	// not, are invalid before any signature is looked at.
	parts := strings.Split(at(now.Add(time.Hour)), ".")
	for _, exp := range []string{"-1", "0", "+" + parts[2], "0" + parts[2], parts[2] + " ", "1e9", "9223372036854775808", "-9223372036854775808", ""} {
		tk := parts[0] + "." + parts[1] + "." + exp + "." + parts[3]
		if err := v.VerifyAt(s, tk, now); !errors.Is(err, propagation.ErrTicketInvalid) {
			t.Errorf("expiry %q: %v, want ErrTicketInvalid", exp, err)
		}
	}
	// A lifetime under a second would reject every ticket: refused.
	for _, d := range []time.Duration{time.Nanosecond, 999 * time.Millisecond} {
		if _, err := v.WithMaxLifetime(d); err == nil {
			t.Errorf("WithMaxLifetime(%v) accepted: every ticket would be rejected", d)
		}
	}
	if _, err := v.WithMaxLifetime(time.Second); err != nil {
		t.Errorf("WithMaxLifetime(1s): %v", err)
	}
}

// TestTicketKeyIDCase: key IDs are compared exactly. A ticket whose key
// ID differs from the verifier's only in case is signed with an unknown
// key, whatever its MAC (the MAC covers the key ID).
func TestTicketKeyIDCase(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	s := propagation.Sandbox{ID: "pr-42", Actor: "alice"}
	upper := propagation.Key{ID: "K1", Secret: key1.Secret}
	signer, _ := propagation.NewSigner(key1)
	signerUpper, _ := propagation.NewSigner(upper)
	v, _ := propagation.NewVerifier(key1)
	tk, _ := signer.SignUntil(s, now.Add(time.Hour))
	tkUpper, _ := signerUpper.SignUntil(s, now.Add(time.Hour))
	if err := v.VerifyAt(s, tkUpper, now); !errors.Is(err, propagation.ErrUnknownKey) {
		t.Errorf("signed under K1, verified under k1: %v", err)
	}
	// The same secret under both IDs: each ticket verifies under its
	// own ID only.
	both, err := propagation.NewVerifier(key1, upper)
	if err != nil {
		t.Fatal(err)
	}
	swapped := strings.Replace(tk, ".k1.", ".K1.", 1)
	if err := both.VerifyAt(s, swapped, now); !errors.Is(err, propagation.ErrTicketInvalid) {
		t.Errorf("k1's MAC under key ID K1: %v", err)
	}
}

// TestStripTicket: the ticket goes from every baggage a carrier holds,
// under the spelling the codec reads (a percent-encoded value, with
// properties, the only member), and from the context's OpenTelemetry
// baggage; everything else stays. RedactTicket keeps the ticket's place
// and fields before the signature.
func TestStripTicket(t *testing.T) {
	const tk = "v1.k1.1795777200.XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	c := propagation.Default()
	for _, tc := range []struct {
		in, strip, redact string // "" for no header
	}{
		{"tenant=acme,sandbox.id=pr-1,sandbox.ticket=" + tk, "tenant=acme,sandbox.id=pr-1", "tenant=acme,sandbox.id=pr-1,sandbox.ticket=v1.k1.1795777200.redacted"},
		{"sandbox.ticket=" + tk + ";p=1, sandbox.id=pr-1", "sandbox.id=pr-1", "sandbox.ticket=v1.k1.1795777200.redacted,sandbox.id=pr-1"},
		{"sandbox.ticket=v1%2Ek1%2E1795777200%2EXQeUWNmS", "", "sandbox.ticket=redacted"},
		{"sandbox.id=pr-1", "sandbox.id=pr-1", "sandbox.id=pr-1"},
		{"x=sandbox.ticket", "x=sandbox.ticket", "x=sandbox.ticket"},
	} {
		for _, hdr := range []string{"Baggage", "Grpc-Metadata-Baggage"} {
			h := http.Header{hdr: {tc.in}, "Other": {"sandbox.ticket=" + tk}}
			c.StripTicket(otelprop.HeaderCarrier(h))
			if got := strings.Join(h[hdr], ","); got != tc.strip {
				t.Errorf("StripTicket %s: %q -> %q, want %q", hdr, tc.in, got, tc.strip)
			}
			if h.Get("Other") == "" {
				t.Errorf("StripTicket %s: removed a header that is not baggage", hdr)
			}
			h = http.Header{hdr: {tc.in}}
			c.RedactTicket(otelprop.HeaderCarrier(h))
			if got := strings.Join(h[hdr], ","); got != tc.redact {
				t.Errorf("RedactTicket %s: %q -> %q, want %q", hdr, tc.in, got, tc.redact)
			}
		}
	}
	for _, hdr := range []string{"Sandbox.ticket", "Uberctx-Sandbox.ticket", "Ot-Baggage-Sandbox.ticket"} {
		h := http.Header{hdr: {tk}}
		c.RedactTicket(otelprop.HeaderCarrier(h))
		if got := h.Get(hdr); got != "v1.k1.1795777200.redacted" {
			t.Errorf("RedactTicket %s: %q", hdr, got)
		}
	}

	bag, err := baggage.Parse("tenant=acme,sandbox.id=pr-1,sandbox.ticket=" + tk)
	if err != nil {
		t.Fatal(err)
	}
	ctx := propagation.ContextWithSandbox(baggage.ContextWithBaggage(context.Background(), bag), propagation.Sandbox{ID: "pr-1"})
	out := c.StripTicketContext(ctx)
	got := baggage.FromContext(out)
	if got.Member("sandbox.ticket").Key() != "" || got.Member("tenant").Value() != "acme" || got.Member("sandbox.id").Value() != "pr-1" {
		t.Errorf("StripTicketContext: baggage %q", got.String())
	}
	if s, ok := propagation.FromContext(out); !ok || s.ID != "pr-1" {
		t.Errorf("StripTicketContext lost the sandbox: %+v %v", s, ok)
	}
	if c.StripTicketContext(out) != out {
		t.Error("StripTicketContext made a new context with nothing to remove")
	}
}

// TestTicketConflictNotEchoed: Read's error about two different tickets
// names their key IDs and expiries, never their signatures.
func TestTicketConflictNotEchoed(t *testing.T) {
	const a, b = "v1.k1.1795777200.XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg", "v1.k1.1795777200.r-rJup3b3OMaRemseq0X-5v6jWxWLamRCt-P0NC85uc"
	h := http.Header{"Baggage": {"sandbox.id=pr-1,sandbox.ticket=" + a, "sandbox.ticket=" + b + "\\"}}
	_, err := propagation.Default().Read(otelprop.HeaderCarrier(h))
	if err == nil {
		t.Fatal("two tickets read")
	}
	if strings.Contains(err.Error(), "XQeUWNmS") || strings.Contains(err.Error(), "r-rJup3b") {
		t.Errorf("error echoes a ticket: %v", err)
	}
	h = http.Header{"Baggage": {"sandbox.id=pr-1,sandbox.ticket=" + a + ",sandbox.ticket=" + b}}
	_, err = propagation.Default().Read(otelprop.HeaderCarrier(h))
	if !errors.Is(err, propagation.ErrConflict) || strings.Contains(err.Error(), "XQeUWNmS") || !strings.Contains(err.Error(), "v1.k1.1795777200.") {
		t.Errorf("two tickets: %v, want a conflict naming the key and expiry only", err)
	}
}

// TestRedactTicketAnyForm: a ticket under a header RedactTicket does not
// know by name (a deep grpc-gateway form, an underscore spelling, any
// header) is redacted too: a dead letter keeps such a header as it came
// (it made the message unreadable), and people read dead letters. The
// atk2 attack found these forms left whole.
func TestRedactTicketAnyForm(t *testing.T) {
	const tk = "v1.k1.1795777200.XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	const sig = "XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	c := propagation.Default()
	headers := map[string]string{
		"Grpc-Metadata-Grpc-Metadata-Sandbox.ticket": tk,
		"Uberctx_sandbox.ticket":                     tk,
		"Ot-Baggage_sandbox.ticket":                  tk,
		"Grpc_metadata_baggage":                      "tenant=acme,sandbox.ticket=" + tk,
		"X-Note":                                     "tickets: " + tk + " and " + tk,
	}
	h := http.Header{}
	m := otelprop.MapCarrier{}
	for k, v := range headers {
		h.Set(k, v)
		m[strings.ToLower(k)] = v
	}
	h.Set("X-Other", "v1.k1.1795777200.short") // not a ticket's shape: kept
	m["x-other"] = "v1.k1.1795777200.short"
	for name, carrier := range map[string]otelprop.TextMapCarrier{"http.Header": otelprop.HeaderCarrier(h), "map": m} {
		c.RedactTicket(carrier)
		for _, k := range carrier.Keys() {
			v := carrier.Get(k)
			if strings.Contains(v, sig) {
				t.Errorf("%s: %s still holds the signature: %q", name, k, v)
			}
			if strings.EqualFold(k, "x-other") {
				if v != "v1.k1.1795777200.short" {
					t.Errorf("%s: %s changed to %q", name, k, v)
				}
			} else if !strings.Contains(v, "v1.k1.1795777200.redacted") {
				t.Errorf("%s: %s = %q, want the ticket's key ID and expiry kept, its signature redacted", name, k, v)
			}
		}
	}
	if got := propagation.RedactTicketText("a " + tk + " b"); got != "a v1.k1.1795777200.redacted b" {
		t.Errorf("RedactTicketText: %q", got)
	}
}
