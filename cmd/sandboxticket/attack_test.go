package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestCurlQuoting: the -curl line is pasted into a shell. An actor or
// origin holding a single quote (o'brien, a branch name such as
// feat/'$(id)') ended the quoting early, and the rest ran as shell code.
// A real shell must read the line back as -H and the one header, running
// nothing.
func TestCurlQuoting(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh to read the line: %v", err)
	}
	for _, sb := range [][2]string{
		{"o'brien", "feat/'$(id)'"},
		{"a'`id`'", "x'\\''y"},
		{"x'$(id)'y", ""},
		{"plain", ""},
	} {
		args := []string{"-id", "pr-1", "-actor", sb[0], "-curl"}
		if sb[1] != "" {
			args = append(args, "-origin", sb[1])
		}
		var out bytes.Buffer
		if err := run(args, envWith(secret), &out); err != nil {
			t.Fatal(err)
		}
		line := strings.TrimSuffix(out.String(), "\n")
		got, err := exec.Command(sh, "-c", `for a in `+line+`; do printf '%s\n' "$a"; done`).Output()
		if err != nil {
			t.Errorf("%q does not read in a shell: %v", line, err)
			continue
		}
		words := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
		if strings.Contains(string(got), "uid=") {
			t.Errorf("%q ran a command: %q", line, got)
		}
		if len(words) != 2 || words[0] != "-H" || !strings.HasPrefix(words[1], "baggage: sandbox.id=pr-1,") {
			t.Errorf("%q reads in a shell as %q, want -H and the header", line, words)
			continue
		}
		m := readLine(t, words[1]+"\n", "")
		if m.Sandbox.Actor != sb[0] || m.Sandbox.Origin != sb[1] {
			t.Errorf("%q: the header names actor %q, origin %q; want %q, %q", line, m.Sandbox.Actor, m.Sandbox.Origin, sb[0], sb[1])
		}
	}
}

// TestSubSecondTTL: expiries are whole seconds, so a ticket for less than
// a second may expire the moment it is printed: refused.
func TestSubSecondTTL(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"-id", "pr-1", "-ttl", (300 * time.Millisecond).String()}, envWith(secret), &out)
	if err == nil || out.Len() != 0 {
		t.Errorf("-ttl 300ms: %v, printed %q; want an error and nothing printed", err, out.String())
	}
}
