package main

import (
	"strings"
	"testing"
)

func TestQuickstart(t *testing.T) {
	var out strings.Builder
	if err := run(&out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{
		"✓ production request",
		"✓ sandbox request with a ticket",
		"decision=admitted sandbox.id=pr-42 sandbox.actor=alice",
		"decision=routed",
		"decision=stripped",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
