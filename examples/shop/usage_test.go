package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

// TestUsageNamesTheServers: -h tells a newcomer which servers the shop
// uses and how to point it at others, not only -serve; before, the
// environment variables were only in the README and in the error of a
// server that could not be reached.
func TestUsageNamesTheServers(t *testing.T) {
	var out bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{
		"-serve",
		"DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres",
		"MYSQL_DSN", "root@tcp(127.0.0.1:3306)/",
		"REDIS_ADDR", "127.0.0.1:6379",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage does not say %q:\n%s", want, out.String())
		}
	}
	if serve, err := parseFlags([]string{"-serve"}, &out); err != nil || !serve {
		t.Errorf("-serve: %v, %v", serve, err)
	}
}
