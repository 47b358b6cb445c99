//go:build !unix

package porttest

import (
	"net"
	"testing"
)

// boundPort returns a port on 127.0.0.1 nothing listens on. Without the
// unix sockets API it is only freed, not held: another listener may take
// it before the test uses it.
func boundPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Holds reports whether Refused holds its port until the test ends.
const Holds = false
