package propagation

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// mayHoldTicketRef is mayHoldTicket's definition: one of the five ways
// every match of ticketText starts.
func mayHoldTicketRef(s string) bool {
	for _, p := range [...]string{"v1.", "v1%2", "v%31", "%761", "%76%31"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// TestMayHoldTicketPieces (atk4): the two-pass mayHoldTicket agrees with
// its definition on texts of the pieces of ticket starts.
func TestMayHoldTicketPieces(t *testing.T) {
	pieces := []string{"v", "1", ".", "%", "2", "%2", "%2E", "3", "%31", "%3", "7", "6", "%76", "%7", "vv", "A", "%%"}
	rng := rand.New(rand.NewPCG(4, 5))
	for range 100000 {
		var b strings.Builder
		for range rng.IntN(8) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		if s := b.String(); mayHoldTicket(s) != mayHoldTicketRef(s) {
			t.Fatalf("mayHoldTicket(%q) = %v, want %v", s, mayHoldTicket(s), mayHoldTicketRef(s))
		}
	}
}

func FuzzMayHoldTicket(f *testing.F) {
	for _, s := range []string{"v1.", "v%31", "%76%31", "%761", "v1%2", "vv1.", "%7%76%31", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if mayHoldTicket(s) != mayHoldTicketRef(s) {
			t.Fatalf("mayHoldTicket(%q) = %v, want %v", s, mayHoldTicket(s), mayHoldTicketRef(s))
		}
	})
}
