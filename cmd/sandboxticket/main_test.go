package main

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	otelprop "go.opentelemetry.io/otel/propagation"
	"go.uber.org/goleak"

	"github.com/sandboxkit/sandboxkit/propagation"
)

const secret = "0123456789abcdef0123456789abcdef"

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-id", "pr-42", "-actor", "alice smith", "-ttl", "1h", "-key-id", "k1"}, envWith(secret), &out); err != nil {
		t.Fatal(err)
	}
	// What the edge does with it: read the markers, verify the ticket.
	m := readLine(t, out.String(), "")
	if m.Sandbox != (propagation.Sandbox{ID: "pr-42", Actor: "alice smith"}) {
		t.Fatalf("markers %+v", m)
	}
	v := verifier(t, "k1", secret)
	if err := v.Verify(m.Sandbox, m.Ticket); err != nil {
		t.Fatalf("ticket does not verify: %v", err)
	}
	if err := v.VerifyAt(m.Sandbox, m.Ticket, time.Now().Add(61*time.Minute)); err == nil {
		t.Fatal("ticket outlives its ttl")
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Each case lacks exactly one thing: the rest is valid.
	for _, c := range []struct {
		name    string
		args    []string
		secret  string // in the environment
		want    string // in the error message
		wantErr error
	}{
		{name: "no id", args: []string{"-ttl", "1h"}, secret: secret, want: "-id is required"},
		{name: "bad id", args: []string{"-id", "PR_1"}, secret: secret, wantErr: propagation.ErrInvalidID},
		{name: "zero ttl", args: []string{"-id", "pr-1", "-ttl", "0s"}, secret: secret, want: "-ttl must be positive"},
		{name: "negative ttl", args: []string{"-id", "pr-1", "-ttl", "-1h"}, secret: secret, want: "-ttl must be positive"},
		{name: "ttl beyond the default maximum lifetime", args: []string{"-id", "pr-1", "-ttl", "25h"}, secret: secret, want: "exceeds -max-ttl 24h0m0s"},
		{name: "no secret", args: []string{"-id", "pr-1"}, want: "no signing secret"},
		{name: "short secret", args: []string{"-id", "pr-1"}, secret: secret[:31], want: "want at least 32"},
		{name: "bad key id", args: []string{"-id", "pr-1", "-key-id", "k 1"}, secret: secret, want: "may hold only letters"},
		{name: "missing secret file", args: []string{"-id", "pr-1", "-secret-file", filepath.Join(dir, "none")}, secret: secret, wantErr: fs.ErrNotExist},
		{name: "empty secret file", args: []string{"-id", "pr-1", "-secret-file", empty}, secret: secret, want: "no signing secret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(c.args, envWith(c.secret), &out)
			switch {
			case err == nil:
				t.Fatalf("run(%q) succeeded: %q", c.args, out.String())
			case c.wantErr != nil && !errors.Is(err, c.wantErr):
				t.Fatalf("run(%q) = %v, want %v", c.args, err, c.wantErr)
			case !strings.Contains(err.Error(), c.want):
				t.Fatalf("run(%q) = %v, want %q", c.args, err, c.want)
			}
			if out.Len() != 0 {
				t.Errorf("run(%q) failed but printed %q", c.args, out.String())
			}
		})
	}
}

func TestRunSecretFile(t *testing.T) {
	const fileSecret = "fedcba9876543210fedcba9876543210"
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(fileSecret+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The file wins over the environment; its line ending is not part of
	// the secret.
	var out bytes.Buffer
	if err := run([]string{"-id", "pr-7", "-secret-file", path}, envWith(secret), &out); err != nil {
		t.Fatal(err)
	}
	m := readLine(t, out.String(), "")
	for key, want := range map[string]bool{fileSecret: true, secret: false, fileSecret + "\r\n": false} {
		if err := verifier(t, "default", key).Verify(m.Sandbox, m.Ticket); (err == nil) != want {
			t.Errorf("verified with secret %q: %v, want valid = %v", key, err, want)
		}
	}
}

func TestRunCurl(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-id", "pr-42", "-origin", "pr/42", "-curl"}, envWith(secret), &out); err != nil {
		t.Fatal(err)
	}
	m := readLine(t, out.String(), "-H '")
	if m.Sandbox != (propagation.Sandbox{ID: "pr-42", Origin: "pr/42"}) {
		t.Fatalf("markers %+v", m)
	}
	if err := verifier(t, "default", secret).Verify(m.Sandbox, m.Ticket); err != nil {
		t.Fatalf("ticket does not verify: %v", err)
	}
}

// envWith is an environment holding secret as SANDBOXKIT_TICKET_SECRET,
// unless it is empty.
func envWith(secret string) func(string) string {
	return func(k string) string {
		if k == "SANDBOXKIT_TICKET_SECRET" {
			return secret
		}
		return ""
	}
}

// verifier returns the edge's verifier of tickets signed with key id and
// secret.
func verifier(t *testing.T, id, secret string) *propagation.Verifier {
	t.Helper()
	v, err := propagation.NewVerifier(propagation.Key{ID: id, Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// readLine parses run's output: one line, "baggage: <value>" wrapped in
// prefix and a closing quote when prefix is not empty, and returns the
// markers the edge reads from it.
func readLine(t *testing.T, out, prefix string) propagation.Markers {
	t.Helper()
	line, ok := strings.CutSuffix(out, "\n")
	if !ok || strings.Contains(line, "\n") {
		t.Fatalf("output %q is not one line", out)
	}
	if prefix != "" {
		if !strings.HasPrefix(line, prefix) || !strings.HasSuffix(line, "'") {
			t.Fatalf("output %q is not %s...'", line, prefix)
		}
		line = line[len(prefix) : len(line)-1]
	}
	value, ok := strings.CutPrefix(line, "baggage: ")
	if !ok {
		t.Fatalf("output %q is not a baggage header line", line)
	}
	m, err := propagation.Default().Read(otelprop.HeaderCarrier(http.Header{"Baggage": {value}}))
	if err != nil {
		t.Fatal(err)
	}
	if m.Ticket == "" {
		t.Fatalf("output %q holds no ticket", line)
	}
	return m
}

// TestExitCode: -h prints the usage and exits 0 (it used to exit 2 with
// "flag: help requested"); a real error exits 2 with the message.
func TestExitCode(t *testing.T) {
	var stderr bytes.Buffer
	if code := exitCode(run([]string{"-h"}, envWith(secret), io.Discard), &stderr); code != 0 || stderr.Len() != 0 {
		t.Errorf("-h: exit %d, stderr %q; want 0 and nothing more than the usage", code, stderr.String())
	}
	if code := exitCode(run(nil, envWith(secret), io.Discard), &stderr); code != 2 || !strings.Contains(stderr.String(), "sandboxticket: -id is required") {
		t.Errorf("no -id: exit %d, stderr %q; want 2 and the reason", code, stderr.String())
	}
}
