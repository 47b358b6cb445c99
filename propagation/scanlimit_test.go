package propagation_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// oddCodec is a codec whose keys hold '+' and '%', read by every lenient
// reading of a key (the costliest case).
func oddCodec(t testing.TB) *propagation.Codec {
	c, err := propagation.NewCodec(propagation.WithBaggageKeys("sb+id", "sb%act", "sb.origin"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestHostileBaggageBounded: near-1 MB baggage built to make the lenient
// key readings work hard (#13) is unreadable (a trusted source's request
// is refused) and stripped whole, and reading it allocates a handful of
// times, not once or more per member: the codec decides it by a linear
// scan, without splitting it. Before the scan limits the codec read each
// of up to half a million lenient keys, for 20 to 300 ms of CPU.
func TestHostileBaggageBounded(t *testing.T) {
	codecs := map[string]*propagation.Codec{"default": propagation.Default(), "odd": oddCodec(t)}
	bags := hostileBaggage()
	// Without a key of ours in the text: the '%' alone may hide one.
	bags["percent-only"] = "a=b," + strings.Repeat("%,", hostileSize/2)
	for name, bag := range bags {
		for cn, c := range codecs {
			if cn == "default" && name == "odd-member" || cn == "odd" && !strings.Contains(bag, "%") {
				continue // holds none of this codec's keys
			}
			h := http.Header{"Baggage": {bag}}
			m, err := c.Read(otelprop.HeaderCarrier(h))
			if !m.Found || !m.Baggage || !errors.Is(err, propagation.ErrBaggageLimit) {
				t.Errorf("%s/%s: Read = %+v, %v; want found, unreadable, ErrBaggageLimit", name, cn, m, err)
			}
			if n := testing.AllocsPerRun(2, func() { c.Read(otelprop.HeaderCarrier(h)) }); n > 8 {
				t.Errorf("%s/%s: Read allocates %v times; want a handful (no per-member work)", name, cn, n)
			}
			s := h.Clone()
			c.Strip(otelprop.HeaderCarrier(s))
			if v := s.Values("Baggage"); len(v) != 0 {
				t.Errorf("%s/%s: Strip left %d bytes of baggage", name, cn, len(strings.Join(v, ",")))
			}
			if n := testing.AllocsPerRun(2, func() { c.Strip(otelprop.HeaderCarrier(http.Header{"Baggage": {bag}})) }); n > 8 {
				t.Errorf("%s/%s: Strip allocates %v times; want a handful", name, cn, n)
			}
			if cn == "default" && strings.Contains(bag, "%") && !c.Foreign(otelprop.HeaderCarrier(h)) {
				t.Errorf("%s/%s: Foreign = false over the scan limits with a '%%' (may hide sd-routing-key)", name, cn)
			}
		}
	}
}

// TestScanLimitsExact: the scan limits are where the docs say, and
// foreign baggage over them that holds neither the text of our keys nor a
// '%' is left alone.
func TestScanLimitsExact(t *testing.T) {
	c := propagation.Default()
	read := func(bag string) (propagation.Markers, error) {
		return c.Read(otelprop.HeaderCarrier(http.Header{"Baggage": {bag}}))
	}
	// Bytes: a foreign member holding a '%' (so the codec must look) and
	// filler, exactly at the limit, then one byte over.
	head := "a=%41,b="
	at := head + strings.Repeat("v", propagation.MaxScanBaggageBytes-len(head))
	if m, err := read(at); m.Found || err != nil {
		t.Errorf("baggage of %d bytes (the limit): Read = %+v, %v; want no markers", len(at), m, err)
	}
	if m, err := read(at + "v"); !m.Found || !errors.Is(err, propagation.ErrBaggageLimit) {
		t.Errorf("baggage of %d bytes: Read = %+v, %v; want unreadable", len(at)+1, m, err)
	}
	// Members.
	members := make([]string, propagation.MaxScanBaggageMembers)
	members[0] = "a=%41"
	for i := 1; i < len(members); i++ {
		members[i] = "k=v"
	}
	if m, err := read(strings.Join(members, ",")); m.Found || err != nil {
		t.Errorf("%d members (the limit): Read = %+v, %v; want no markers", len(members), m, err)
	}
	if m, err := read(strings.Join(members, ",") + ",k=v"); !m.Found || !errors.Is(err, propagation.ErrBaggageLimit) {
		t.Errorf("%d members: Read = %+v, %v; want unreadable", len(members)+1, m, err)
	}
	// Over the limits, but nothing that may be ours: passed over, and
	// Strip keeps it as it is.
	plain := strings.Repeat("tenant=acme,", 20000) + "z=1"
	if m, err := read(plain); m.Found || err != nil {
		t.Errorf("plain foreign baggage over the limits: Read = %+v, %v; want no markers", m, err)
	}
	h := http.Header{"Baggage": {plain}}
	c.Strip(otelprop.HeaderCarrier(h))
	if got := h.Get("Baggage"); got != plain {
		t.Errorf("Strip changed plain foreign baggage over the limits (%d bytes, want %d)", len(got), len(plain))
	}
	// Inject over the limits: ours, and of the foreign baggage, kept
	// only when it may hold nothing of ours, what fits in the W3C limits
	// beside ours, so that the next hop reads the sandbox.
	for bag, keep := range map[string]bool{plain: true, plain + ",x=%41": false} {
		h := http.Header{"Baggage": {bag}}
		c.InjectSandbox(propagation.Sandbox{ID: "pr-7"}, otelprop.HeaderCarrier(h))
		m, err := c.Read(otelprop.HeaderCarrier(http.Header{"Baggage": {h.Get("Baggage")}}))
		if keep {
			// The largest go first: z=1, the smallest, stays.
			want := "sandbox.id=pr-7" + strings.Repeat(",tenant=acme", propagation.MaxBaggageMembers-2) + ",z=1"
			if got := h.Get("Baggage"); got != want || err != nil || m.Sandbox.ID != "pr-7" {
				t.Errorf("Inject over the limits: baggage %.60q (%d bytes), read back %+v, %v; want ours, 62 tenant=acme and z=1", got, len(got), m, err)
			}
			continue
		}
		if h.Get("Baggage") != "sandbox.id=pr-7" || err != nil || m.Sandbox.ID != "pr-7" {
			t.Errorf("Inject over the limits with a '%%': baggage %.40q, read back %+v, %v", h.Get("Baggage"), m, err)
		}
	}
}

// TestLenientWorkBudget: under the scan limits, a key whose lenient
// reading would take many rounds of decoding (%252525...41 loses one
// 25 a round) counts as ours once the work budget is spent, never as foreign;
// while a baggage within the W3C limits whose every key is
// percent-encoded (nested three deep with the default codec, one level
// and partly with a codec whose keys hold '+' or '%', which follows
// every reading)
// is read in full.
func TestLenientWorkBudget(t *testing.T) {
	for cn, c := range map[string]*propagation.Codec{"default": propagation.Default(), "odd": oddCodec(t)} {
		deep := "x%" + strings.Repeat("25", 12000) + "41=v,a=b"
		h := http.Header{"Baggage": {deep}}
		m, err := c.Read(otelprop.HeaderCarrier(h))
		if !m.Found || err == nil {
			t.Errorf("%s: a key past the work budget: Read = %+v, %v; want unreadable", cn, m, err)
		}
		c.Strip(otelprop.HeaderCarrier(h))
		if got := h.Get("Baggage"); got != "a=b" {
			t.Errorf("%s: Strip left %.60q; want a=b", cn, got)
		}

		var members []string
		for i := 0; len(strings.Join(members, ",")) < propagation.MaxBaggageBytes-200 && len(members) < propagation.MaxBaggageMembers-2; i++ {
			key := "k%41%42%43%44%45%46%47%48%49%4A%4B%4C%4D%4E%4F%50%51%52%53%54%55%56%57%58%59%5A%25252541"
			if cn == "odd" {
				// Every reading of every key is followed: one level
				// of escapes.
				key = "kABCDEFGHIJKLMNOPQRSTUVWXYZ%41%42%43%44%45%46%47%48"
			}
			members = append(members, key+strings.Repeat("x", i%7)+"=v"+strings.Repeat("w", 20))
		}
		bag := strings.Join(members, ",")
		m, err = c.Read(otelprop.HeaderCarrier(http.Header{"Baggage": {bag + ",sandbox.id=pr-3,sb+id=pr-3"}}))
		if err != nil || m.Sandbox.ID != "pr-3" {
			t.Errorf("%s: %d percent-encoded foreign keys in %d bytes: Read = %+v, %v; want pr-3", cn, len(members), len(bag), m, err)
		}
	}
}
