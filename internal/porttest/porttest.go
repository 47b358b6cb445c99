// Package porttest gives tests an address on loopback that refuses
// connections for as long as the test runs.
package porttest

import (
	"fmt"
	"testing"
)

// Refused returns "127.0.0.1:port" for a port that nothing listens on
// until t ends: connecting to it is refused. On unix the port stays
// bound (a socket that does not listen), so that neither another
// listener (another package's tests running beside) nor an outgoing
// connection's local port can take it meanwhile; a port that was only
// freed could be, and a request meant to be refused then waited for its
// client's timeout.
func Refused(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", boundPort(t))
}
