package porttest_test

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/sandboxkit/sandboxkit/internal/porttest"
)

// TestRefused: a connection to the address is refused, and (on unix,
// where the port stays bound) no listener can take the port.
func TestRefused(t *testing.T) {
	addr := porttest.Refused(t)
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: connected, want refused", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s: %v, want connection refused", addr, err)
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		l.Close()
		if porttest.Holds {
			t.Errorf("listen on %s: a listener took the port", addr)
		}
	}
}
