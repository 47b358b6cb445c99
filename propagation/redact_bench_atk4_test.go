package propagation_test

import (
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// BenchmarkRedactTicketTextTickets: text that holds tickets, plain and
// percent-encoded: one in a baggage header, and a megabyte of them back
// to back (every one redacted).
func BenchmarkRedactTicketTextTickets(b *testing.B) {
	const tk = "v1.k1.1795777200.XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	enc := strings.ReplaceAll(tk, ".", "%2E")
	for _, c := range []struct{ name, s string }{
		{"baggage", "tenant=acme,sandbox.id=pr-1,sandbox.actor=alice,sandbox.ticket=" + tk},
		{"baggage-enc", "tenant=acme,sandbox.id=pr-1,sandbox.actor=alice%40example.com,sandbox.ticket=" + enc},
		{"tickets/1MiB", strings.Repeat(tk+",", (1<<20)/(len(tk)+1))},
		{"tickets-enc/1MiB", strings.Repeat(enc+",", (1<<20)/(len(enc)+1))},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.s)))
			for b.Loop() {
				if got := propagation.RedactTicketText(c.s); got == c.s {
					b.Fatalf("%.40q unchanged", c.s)
				}
			}
		})
	}
}
