package main

import (
	"strings"
)

// grpcurlCommand is one grpcurl command that -serve prints (and the tests
// run): what it shows, and its arguments after "grpcurl".
type grpcurlCommand struct {
	what string
	args []string
}

// grpcurlCommands returns the grpcurl commands against the gateway's gRPC
// edge; ticket is the baggage header value carrying pr-42 and its ticket.
// The sandbox's metadata goes with -rpc-header, on the call only: -H would
// send it with the reflection requests too (harmless, but audited).
func (sh *shop) grpcurlCommands(ticket string) []grpcurlCommand {
	addr := sh.gatewayGRPC
	const req = `{"item":"mug","qty":3}`
	return []grpcurlCommand{
		{"The services, found by server reflection (no .proto needed)", []string{"-plaintext", addr, "list"}},
		{"The cart service", []string{"-plaintext", addr, "describe", "shop.Cart"}},
		{"Its answer", []string{"-plaintext", addr, "describe", "shop.Quote"}},
		{"A production call", []string{"-plaintext", "-d", req, addr, "shop.Cart/Price"}},
		{"The same in sandbox pr-42: its ticket in the baggage metadata", []string{"-plaintext", "-rpc-header", "baggage: " + ticket, "-d", req, addr, "shop.Cart/Price"}},
		{"An outsider forging the sandbox metadata (stripped, served as production, audited)", []string{"-plaintext", "-rpc-header", "sandbox-id: pr-42", "-d", req, addr, "shop.Cart/Price"}},
		{"Health", []string{"-plaintext", addr, "grpc.health.v1.Health/Check"}},
	}
}

// shellLine returns args as a line for a POSIX shell.
func shellLine(args ...string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@=,") == "" {
			quoted[i] = a
			continue
		}
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(quoted, " ")
}
