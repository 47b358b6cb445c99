// Command sandboxticket prints the header a developer adds to test requests
// so that an edge which admits sandbox traffic only with a signed ticket
// (httpmw and grpcmw with a propagation.Verifier) routes them to a sandbox.
//
// Usage:
//
//	SANDBOXKIT_TICKET_SECRET=... go run ./cmd/sandboxticket -id pr-42 -actor alice -ttl 2h
//
// It prints one line, "baggage: sandbox.id=pr-42,sandbox.actor=alice,sandbox.ticket=v1...",
// ready for curl -H. The secret (at least 32 bytes) comes from the
// environment variable SANDBOXKIT_TICKET_SECRET or from -secret-file, never
// from a flag that would land in shell history; -key-id names it (the
// verifier must hold a key with the same ID). Verifiers reject tickets that
// expire more than their maximum lifetime ahead (24h by default, plus a
// minute for clocks that differ), so -ttl may not exceed -max-ttl
// (default 24h); raise both only for a verifier built with
// WithMaxLifetime.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

func main() {
	os.Exit(exitCode(run(os.Args[1:], os.Getenv, os.Stdout), os.Stderr))
}

// exitCode reports err on w and returns the process's exit status: 0 for
// success and for -h (the flag package has printed the usage), 2 for
// anything else.
func exitCode(err error, w io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	default:
		fmt.Fprintln(w, "sandboxticket:", err)
		return 2
	}
}

func run(args []string, getenv func(string) string, out io.Writer) error {
	fs := flag.NewFlagSet("sandboxticket", flag.ContinueOnError)
	id := fs.String("id", "", "sandbox ID (a DNS label), required")
	actor := fs.String("actor", "", "who the sandbox belongs to")
	origin := fs.String("origin", "", "pull request or dev session")
	ttl := fs.Duration("ttl", 2*time.Hour, "how long the ticket is valid")
	maxTTL := fs.Duration("max-ttl", propagation.DefaultMaxTicketLifetime, "the verifier's maximum ticket lifetime (propagation.Verifier.WithMaxLifetime); -ttl may not exceed it")
	keyID := fs.String("key-id", "default", "ID of the signing key")
	secretFile := fs.String("secret-file", "", "file holding the signing secret (default: $SANDBOXKIT_TICKET_SECRET)")
	curl := fs.Bool("curl", false, "print as a curl -H argument")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("-id is required")
	}
	if *ttl <= 0 {
		return errors.New("-ttl must be positive")
	}
	if *ttl < time.Second {
		// Expiries are whole seconds: the ticket could expire as it is printed.
		return fmt.Errorf("-ttl %v is under a second, the resolution of a ticket's expiry", *ttl)
	}
	if *ttl > *maxTTL {
		return fmt.Errorf("-ttl %v exceeds -max-ttl %v: a verifier with that maximum lifetime rejects the ticket", *ttl, *maxTTL)
	}
	secret := getenv("SANDBOXKIT_TICKET_SECRET")
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return err
		}
		secret = strings.TrimRight(string(b), "\r\n")
	}
	if secret == "" {
		return errors.New("no signing secret: set SANDBOXKIT_TICKET_SECRET or pass -secret-file")
	}
	signer, err := propagation.NewSigner(propagation.Key{ID: *keyID, Secret: []byte(secret)})
	if err != nil {
		return err
	}
	s := propagation.Sandbox{ID: *id, Actor: *actor, Origin: *origin}
	ticket, err := signer.Sign(s, *ttl)
	if err != nil {
		return err
	}
	h := propagation.Default().HTTPHeader(s)
	propagation.Default().InjectTicket(ticket, otelprop.HeaderCarrier(h))
	line := "baggage: " + h.Get("Baggage")
	if *curl {
		// The actor and origin may hold a single quote (a baggage
		// value leaves it unescaped): close, escape and reopen it, so
		// that a shell reads one argument and runs nothing.
		line = "-H '" + strings.ReplaceAll(line, "'", `'\''`) + "'"
	}
	_, err = fmt.Fprintln(out, line)
	return err
}
