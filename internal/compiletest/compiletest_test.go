package compiletest_test

import (
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/internal/compiletest"
)

func TestCheck(t *testing.T) {
	c := compiletest.New(t, "net/netip")
	if err := c.Check("package p\n\nimport \"net/netip\"\n\nvar _ = netip.MustParseAddr(\"10.0.0.1\")\n"); err != nil {
		t.Errorf("valid file: %v", err)
	}
	err := c.Check("package p\n\nimport \"net/netip\"\n\nvar _ int = netip.MustParseAddr(\"10.0.0.1\")\n")
	if err == nil || !strings.Contains(err.Error(), "cannot use") {
		t.Errorf("ill-typed file: %v, want a type error", err)
	}
}
