package main

import (
	"bytes"
	"testing"
	"time"
)

// TestMaxTTLTicketFromAClockAhead: a ticket issued with -ttl at its
// maximum (-max-ttl, the verifier's default lifetime) is accepted by an
// edge whose clock runs a second behind the issuing machine's. Without an
// allowance for clock skew the edge refused every such ticket as
// outliving its maximum lifetime, and one issued in the last millisecond
// of a second by a clock a millisecond ahead.
func TestMaxTTLTicketFromAClockAhead(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-id", "pr-42", "-actor", "alice", "-ttl", "24h"}, envWith(secret), &out); err != nil {
		t.Fatal(err)
	}
	m := readLine(t, out.String(), "")
	v := verifier(t, "default", secret)
	for _, behind := range []time.Duration{time.Millisecond, time.Second, 30 * time.Second} {
		if err := v.VerifyAt(m.Sandbox, m.Ticket, time.Now().Add(-behind)); err != nil {
			t.Errorf("edge %v behind the issuer: %v", behind, err)
		}
	}
}
