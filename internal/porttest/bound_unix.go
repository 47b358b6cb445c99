//go:build unix

package porttest

import (
	"syscall"
	"testing"
)

// boundPort binds a TCP socket to a free port on 127.0.0.1 without
// listening on it, until the test ends, and returns the port: connecting
// to it is refused, and neither a listener nor an outgoing connection's
// local port can take it meanwhile.
func boundPort(t testing.TB) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}

// Holds reports whether Refused holds its port until the test ends.
const Holds = true
