package propagation_test

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestRedactTicketTextOverlapping (atk4): the redaction replaced matches
// left to right without overlap, so text that looks like a ticket's
// start right before a real ticket (a truncated ticket, 41 base64url
// characters of signature, then the real one with nothing between) took
// the real ticket's "v1" as the last two characters of its own
// signature; what was left, ".k1.<expiry>.<signature>", no longer
// started as a ticket and kept its signature whole. Plain and
// percent-encoded.
func TestRedactTicketTextOverlapping(t *testing.T) {
	const tk = "v1.k1.1795777200.XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	const sig = "XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	enc := strings.ReplaceAll(tk, ".", "%2E")
	decoy := "v1.a.1." + strings.Repeat("A", 41)
	for _, s := range []string{
		decoy + tk,
		decoy + enc,
		"v1%2Ea%2E1%2E" + strings.Repeat("A", 41) + enc,
		"v1.a.1." + strings.Repeat("A", 41) + "%76%31" + enc[len("v1"):],
		"v1.a.1." + strings.Repeat("A", 42) + "v" + "%31" + enc[len("v1"):],
		"x " + decoy + decoy + tk + " y",
		decoy + tk + decoy + tk,
	} {
		got := propagation.RedactTicketText(s)
		if strings.Contains(got, sig) || strings.Contains(decodeAll(got), sig) {
			t.Errorf("RedactTicketText(%q) = %q keeps the signature", s, got)
		}
	}
}

// TestRedactTicketTextPieces (atk4): texts made of the pieces of tickets
// (versions, dots, key IDs, expiries, signatures and their ends, each
// plain or percent-encoded) in random order: no ticket that starts at any
// offset of the decoded text keeps its signature.
func TestRedactTicketTextPieces(t *testing.T) {
	const sig = "XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	pieces := []string{"v1", "v", "1", ".", "%2E", "%2e", "%76", "%31", "%76%31", "k1", "v1.", "1795777200", "5",
		sig, sig[:41], sig[:20], sig[20:], "A", "%41", "-", ",", "=", "v1.k1.1795777200.", "v1%2Ek1%2E1795777200%2E"}
	rng := rand.New(rand.NewPCG(4, 4))
	for range 30000 {
		var b strings.Builder
		for range 1 + rng.IntN(12) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		s := b.String()
		if leak := keptSignature(s, propagation.RedactTicketText(s)); leak != "" {
			t.Fatalf("RedactTicketText(%q) = %q keeps the signature %s", s, propagation.RedactTicketText(s), leak)
		}
	}
}

var anchoredTicket = regexp.MustCompile(`^v1\.[A-Za-z0-9_-]{1,32}\.[0-9]{1,19}\.([A-Za-z0-9_-]{43})`)

// keptSignature returns the signature of a ticket starting at any offset
// of the percent-decoded s that the decoded out still holds (and s holds
// only once), or "".
func keptSignature(s, out string) string {
	ds, dout := decodeAll(s), decodeAll(out)
	for i := 0; i < len(ds); i++ {
		m := anchoredTicket.FindStringSubmatch(ds[i:])
		if m == nil {
			continue
		}
		if sig := m[1]; strings.Count(ds, sig) == 1 && strings.Contains(dout, sig) {
			return sig
		}
	}
	return ""
}

// FuzzRedactTicketTextOverlapping (atk4): FuzzRedactTicketText's oracle
// finds tickets left to right without overlap, as the redaction did, and
// so could not see a ticket whose start another match took. This one
// looks for a ticket at every offset of the percent-decoded text.
func FuzzRedactTicketTextOverlapping(f *testing.F) {
	const tk = "v1.k1.1795777200.XQeUWNmS-hDLwG5atOYl5Hm4S_6kk0wA-lnBFXkpnPg"
	f.Add("v1.a.1." + strings.Repeat("A", 41) + tk)
	f.Add(strings.ReplaceAll(tk, ".", "%2E"))
	f.Add("v1.v1.v1." + tk)
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 4096 {
			return
		}
		out := propagation.RedactTicketText(s)
		if sig := keptSignature(s, out); sig != "" {
			t.Fatalf("RedactTicketText(%q) = %q keeps the signature %s", s, out, sig)
		}
	})
}
