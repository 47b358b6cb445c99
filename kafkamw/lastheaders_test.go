package kafkamw

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestLastHeaders: a message is read from the remembered headers only when
// its header list is the same, key for key and byte for byte; the copy is
// the reader's own, whatever the caller does to the message afterwards.
func TestLastHeaders(t *testing.T) {
	h := func(kv ...string) []kafka.Header {
		var hs []kafka.Header
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, kafka.Header{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return hs
	}
	var l lastHeaders
	if _, _, ok := l.read(nil); ok {
		t.Fatal("empty memory matched")
	}
	hs := h("sandbox-id", "pr-1", "baggage", "sandbox.id=pr-1")
	want := propagation.Markers{Found: true, Sandbox: propagation.Sandbox{ID: "pr-1"}}
	l.remember(hs, want, nil)
	hs[0].Value[3] = '2' // the caller's bytes change: the memory does not
	for _, tc := range []struct {
		name string
		hs   []kafka.Header
		ok   bool
	}{
		{"same", h("sandbox-id", "pr-1", "baggage", "sandbox.id=pr-1"), true},
		{"another value", h("sandbox-id", "pr-2", "baggage", "sandbox.id=pr-1"), false},
		{"value cut short", h("sandbox-id", "pr-", "baggage", "sandbox.id=pr-1"), false},
		{"another key", h("Sandbox-Id", "pr-1", "baggage", "sandbox.id=pr-1"), false},
		{"one more", h("sandbox-id", "pr-1", "baggage", "sandbox.id=pr-1", "x", ""), false},
		{"one less", h("sandbox-id", "pr-1"), false},
		{"swapped", h("baggage", "sandbox.id=pr-1", "sandbox-id", "pr-1"), false},
		{"changed bytes", hs, false},
	} {
		m, err, ok := l.read(tc.hs)
		if ok != tc.ok || (ok && (m != want || err != nil)) {
			t.Errorf("%s: read = %+v, %v, %v; want a match: %v", tc.name, m, err, ok, tc.ok)
		}
	}
}

// TestDecideAlternatingSandboxes: messages of two sandboxes and untagged
// ones, interleaved, are each decided for their own sandbox, with no
// allocation once both have been seen.
func TestDecideAlternatingSandboxes(t *testing.T) {
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-1", Services: map[string]routes.Route{"orders": {Upstream: "h:1", ActiveFrom: time.Now().Add(-time.Hour)}}},
		{ID: "pr-2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	header := func(id string) []kafka.Header {
		var c carrier
		propagation.Default().InjectSandbox(propagation.Sandbox{ID: id, Actor: "alice"}, &c)
		return c.list
	}
	stream := []struct {
		hs   []kafka.Header
		want fate // the baseline reader's
		id   string
	}{
		{header("pr-1"), fateSandbox, "pr-1"},
		{header("pr-2"), fateMine, "pr-2"},
		{nil, fateMine, ""},
		{header("pr-2"), fateMine, "pr-2"},
		{header("pr-1"), fateSandbox, "pr-1"},
		{header("pr-1"), fateSandbox, "pr-1"},
		{header("pr-3"), fateSkip, ""}, // unknown: orphaned
	}
	r := bareReader(t, table, "orders")
	run := func() {
		for i, m := range stream {
			msg := kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: m.hs}
			out, v, err := r.decide(context.Background(), &msg)
			if err != nil || v.fate != m.want || v.sandbox != m.id && m.want == fateSandbox {
				t.Fatalf("message %d: %+v, %v; want fate %d for %q", i, v, err, m.want, m.id)
			}
			s, ok := propagation.FromContext(out)
			if m.want == fateMine && (ok != (m.id != "") || s.ID != m.id) {
				t.Fatalf("message %d: context sandbox %v, %v; want %q", i, s, ok, m.id)
			}
		}
	}
	run()
	if testing.Short() || raceEnabled {
		return
	}
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("%v allocations per pass over the stream, want 0", n)
	}
}

// read returns what the codec read from hs, when hs is the list
// remembered: decide's use of lastHeaders (matches, then l.m and l.err
// in place), as one call for the tests.
func (l *lastHeaders) read(hs []kafka.Header) (propagation.Markers, error, bool) {
	if !l.matches(hs) {
		return propagation.Markers{}, nil, false
	}
	return l.m, l.err, true
}
