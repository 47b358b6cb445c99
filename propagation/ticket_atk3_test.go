package propagation_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestRedactTicketTextPercentEncoded: a baggage value may percent-encode
// any byte, and every baggage parser (ours, OpenTelemetry's) decodes it,
// so v1%2Ek1%2E... is the ticket itself to the next hop. The atk3 attack
// found such a ticket under a header RedactTicket knows only by its text
// (a deep grpc-gateway baggage, a note) left whole on dead letters.
func TestRedactTicketTextPercentEncoded(t *testing.T) {
	signer, err := propagation.NewSigner(propagation.Key{ID: "k1", Secret: []byte(strings.Repeat("k", 32))})
	if err != nil {
		t.Fatal(err)
	}
	sb := propagation.Sandbox{ID: "pr-1"}
	tk, err := signer.Sign(sb, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndexByte(tk, '.')
	sig := tk[i+1:]
	encAll := func(s string) string {
		var b strings.Builder
		for j := 0; j < len(s); j++ {
			fmt.Fprintf(&b, "%%%02X", s[j])
		}
		return b.String()
	}
	forms := map[string]string{
		"dots":          strings.ReplaceAll(tk, ".", "%2E"),
		"dots-lower":    strings.ReplaceAll(tk, ".", "%2e"),
		"v":             "%76" + tk[1:],
		"signature":     tk[:i+1] + encAll(sig[:3]) + sig[3:],
		"every-byte":    encAll(tk),
		"last-byte":     tk[:len(tk)-1] + encAll(tk[len(tk)-1:]),
		"plain":         tk,
		"escape-before": "%20" + tk,
		"key-and-digit": strings.Replace(strings.Replace(tk, "k1", "%6B%31", 1), ".1", ".%31", 1),
	}
	// Each form is the ticket to the codec's own baggage reader.
	c := propagation.Default()
	for name, f := range forms {
		m, err := c.Read(otelprop.HeaderCarrier(http.Header{"Baggage": {"sandbox.id=pr-1,sandbox.ticket=" + strings.TrimPrefix(f, "%20")}}))
		if err != nil || m.Ticket != tk {
			t.Fatalf("%s: Read = %q, %v; want the ticket (the form is not one a hop reads)", name, m.Ticket, err)
		}
	}
	for name, f := range forms {
		for _, s := range []string{f, "note " + f + " end", f + f, f + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"} {
			got := propagation.RedactTicketText(s)
			if strings.Contains(got, sig) || strings.Contains(decodeAll(got), sig) {
				t.Errorf("%s: RedactTicketText(%q) = %q keeps the signature", name, s, got)
			}
			if !strings.Contains(got, "redacted") {
				t.Errorf("%s: RedactTicketText(%q) = %q, want the signature redacted", name, s, got)
			}
		}
	}
	// Not tickets: kept as they are.
	for _, s := range []string{"%2E%2E%41", "v1%2Ek1%2E1%2Eshort", "a%20b", "v1.k1.1.short"} {
		if got := propagation.RedactTicketText(s); got != s {
			t.Errorf("RedactTicketText(%q) = %q, want it unchanged", s, got)
		}
	}
}

// decodeAll percent-decodes s, leaving malformed escapes.
func decodeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil && s[i+1] != '+' && s[i+1] != '-' {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// BenchmarkRedactTicketText: the text redaction on dead letters must stay
// linear in the value, however hostile: a megabyte of near-tickets
// (v1.<32 chars>.<19 digits>. with no signature), of percent escapes, of
// base64.
func BenchmarkRedactTicketText(b *testing.B) {
	near := "v1." + strings.Repeat("a", 32) + "." + strings.Repeat("1", 19) + "." + strings.Repeat("A", 42) + " "
	for _, c := range []struct{ name, unit string }{
		{"near-ticket", near},
		{"near-ticket-enc", strings.ReplaceAll(near, ".", "%2E")},
		{"escapes", "%41"},
		{"base64", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"},
	} {
		for _, size := range []int{1 << 10, 1 << 20} {
			s := strings.Repeat(c.unit, size/len(c.unit))
			b.Run(fmt.Sprintf("%s/%d", c.name, size), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(s)))
				for b.Loop() {
					if got := propagation.RedactTicketText(s); got != s {
						b.Fatal("changed")
					}
				}
			})
		}
	}
}

// TestTicketInAnotherMarkerNotEchoed (atk3): a ticket sent where the
// sandbox ID goes (a script's -H "Sandbox-Id: $TICKET", a baggage
// sandbox.id member) is an invalid ID, and the error, which reaches 400
// bodies, gRPC statuses, audit records and dead-letter reasons, quoted it
// whole: a bearer credential shown to whoever reads them. Only its key ID
// and expiry are shown, as for a rejected ticket member.
func TestTicketInAnotherMarkerNotEchoed(t *testing.T) {
	const tk = "v1.k1.1795777200.XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	const sig = "XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	long := "v1." + strings.Repeat("k", 32) + ".1795777200." + sig
	for _, h := range []http.Header{
		{"Sandbox-Id": {tk}},
		{"Baggage": {"sandbox.id=" + tk}},
		{"Sandbox-Id": {"pr-1", tk}},
		{"Sandbox-Id": {"pr-1"}, "Baggage": {"sandbox.id=" + strings.ReplaceAll(tk, ".", "%2E")}},
		{"Sandbox-Id": {long}},
	} {
		for _, carrier := range []otelprop.TextMapCarrier{otelprop.HeaderCarrier(h), mapOf(h)} {
			_, err := propagation.Default().Read(carrier)
			if err == nil {
				t.Fatalf("%v: no error", h)
			}
			if strings.Contains(err.Error(), sig[:8]) {
				t.Errorf("%v: the error shows the ticket's signature: %v", h, err)
			}
		}
	}
}

// mapOf returns h as a map carrier, lower-case keys, lines joined.
func mapOf(h http.Header) otelprop.MapCarrier {
	m := otelprop.MapCarrier{}
	for k, v := range h {
		m[strings.ToLower(k)] = strings.Join(v, ",")
	}
	return m
}

// FuzzRedactTicketText (atk3): after redaction, no signature of a ticket
// that the percent-decoded text held is left in the percent-decoded
// result (a signature that also stands elsewhere in the text, not as a
// ticket's, is not looked for).
func FuzzRedactTicketText(f *testing.F) {
	const tk = "v1.k1.1795777200.XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	for _, s := range []string{tk, strings.ReplaceAll(tk, ".", "%2E"), "%76" + tk[1:] + tk, "a%2" + tk, tk + "ABCDEFGHIJ", "v1.v1." + tk, "%%2E" + tk} {
		f.Add(s)
	}
	plain := regexp.MustCompile(`v1\.[A-Za-z0-9_-]{1,32}\.[0-9]{1,19}\.([A-Za-z0-9_-]{43})`)
	f.Fuzz(func(t *testing.T, s string) {
		out := propagation.RedactTicketText(s)
		ds, dout := decodeAll(s), decodeAll(out)
		for _, m := range plain.FindAllStringSubmatch(ds, -1) {
			if sig := m[1]; strings.Count(ds, sig) == 1 && strings.Contains(dout, sig) {
				t.Errorf("RedactTicketText(%q) = %q keeps the signature %s", s, out, sig)
			}
		}
	})
}
