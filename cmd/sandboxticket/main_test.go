package main

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

const secret = "0123456789abcdef0123456789abcdef"

func TestRun(t *testing.T) {
	env := func(k string) string {
		if k == "SANDBOXKIT_TICKET_SECRET" {
			return secret
		}
		return ""
	}
	var out bytes.Buffer
	if err := run([]string{"-id", "pr-42", "-actor", "alice smith", "-ttl", "1h", "-key-id", "k1"}, env, &out); err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(out.String())
	name, value, ok := strings.Cut(line, ": ")
	if !ok || name != "baggage" {
		t.Fatalf("output %q is not a header line", line)
	}
	// What the edge does with it: read the markers, verify the ticket.
	m, err := propagation.Default().Read(otelprop.HeaderCarrier(http.Header{"Baggage": {value}}))
	if err != nil {
		t.Fatal(err)
	}
	if m.Sandbox != (propagation.Sandbox{ID: "pr-42", Actor: "alice smith"}) || m.Ticket == "" {
		t.Fatalf("markers %+v", m)
	}
	v, _ := propagation.NewVerifier(propagation.Key{ID: "k1", Secret: []byte(secret)})
	if err := v.Verify(m.Sandbox, m.Ticket); err != nil {
		t.Fatalf("ticket does not verify: %v", err)
	}
	if err := v.VerifyAt(m.Sandbox, m.Ticket, time.Now().Add(61*time.Minute)); err == nil {
		t.Fatal("ticket outlives its ttl")
	}
}

func TestRunErrors(t *testing.T) {
	noenv := func(string) string { return "" }
	for _, args := range [][]string{
		{},                             // no id
		{"-id", "pr-1"},                // no secret
		{"-id", "PR_1", "-ttl", "1h"},  // bad id (with secret below)
		{"-id", "pr-1", "-ttl", "-1h"}, // bad ttl
	} {
		env := noenv
		if len(args) > 2 {
			env = func(string) string { return secret }
		}
		if err := run(args, env, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
