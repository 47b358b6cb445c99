package main

// Attacks on sandboxctl (#15): CI jobs racing on one store, errors a CI
// job must be able to read, and stamps that must stay consistent.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// stores starts a file store and an etcd store for the test.
func stores(t *testing.T) map[string]string {
	_, etcdStore := startEtcd(t)
	return map[string]string{
		"file": "file:" + filepath.Join(t.TempDir(), "routes.json"),
		"etcd": etcdStore,
	}
}

// listed returns the sandboxes in store, by ID.
func listed(t *testing.T, store string, now time.Time) map[string]routes.Sandbox {
	t.Helper()
	var sbs []routes.Sandbox
	if err := json.Unmarshal([]byte(mustCtl(t, store, now, "-json", "list")), &sbs); err != nil {
		t.Fatal(err)
	}
	m := map[string]routes.Sandbox{}
	for _, sb := range sbs {
		m[sb.ID] = sb
	}
	return m
}

// TestConcurrentChanges: CI jobs of many pull requests create, route and
// extend sandboxes in one store at once: no change is lost.
func TestConcurrentChanges(t *testing.T) {
	const n = 12
	now := time.Now()
	for name, store := range stores(t) {
		t.Run(name, func(t *testing.T) {
			mustCtl(t, store, now, "create", "pr-shared", "-actor", "ci")
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(3)
				go func() {
					defer wg.Done()
					mustCtl(t, store, now, "create", fmt.Sprintf("pr-%d", i), "-actor", "ci", "-service", "cart=h:1")
				}()
				go func() {
					defer wg.Done()
					mustCtl(t, store, now, "route", "pr-shared", "-service", fmt.Sprintf("svc-%d=h:%d", i, 1000+i))
				}()
				go func() {
					defer wg.Done()
					mustCtl(t, store, now, "extend", "pr-shared", "-ttl", fmt.Sprintf("%dh", 100+i))
				}()
			}
			wg.Wait()
			got := listed(t, store, now)
			if len(got) != n+1 {
				t.Fatalf("%d sandboxes, want %d: %v", len(got), n+1, slices.Sorted(maps.Keys(got)))
			}
			if svcs := got["pr-shared"].Services; len(svcs) != n {
				t.Fatalf("pr-shared has %d routes, want %d: %v", len(svcs), n, svcs)
			}
		})
	}
}

// TestConcurrentPurge: two purge jobs at once each delete what they
// report, together all the removed sandboxes, and neither fails.
func TestConcurrentPurge(t *testing.T) {
	const n = 20
	t0 := time.Now().Add(-3 * time.Hour)
	for name, store := range stores(t) {
		t.Run(name, func(t *testing.T) {
			for i := range n {
				mustCtl(t, store, t0, "create", fmt.Sprintf("pr-%d", i), "-actor", "ci")
				mustCtl(t, store, t0, "remove", fmt.Sprintf("pr-%d", i))
			}
			mustCtl(t, store, t0, "create", "pr-live", "-actor", "ci")
			var (
				wg     sync.WaitGroup
				purged [2][]string
			)
			for j := range purged {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var out struct{ Purged []string }
					if err := json.Unmarshal([]byte(mustCtl(t, store, time.Now(), "-json", "purge")), &out); err != nil {
						t.Error(err)
					}
					purged[j] = out.Purged
				}()
			}
			wg.Wait()
			all := append(slices.Clone(purged[0]), purged[1]...)
			slices.Sort(all)
			if len(all) != n || len(slices.Compact(slices.Clone(all))) != n || slices.Contains(all, "pr-live") {
				t.Fatalf("the purges reported %v and %v, want each of the %d removed sandboxes once", purged[0], purged[1], n)
			}
			if got := listed(t, store, time.Now()); len(got) != 1 {
				t.Fatalf("after the purges the store holds %d sandboxes", len(got))
			}
		})
	}
}

// TestRemovedWithinMargin: a sandbox removed less than a margin ago (its
// routes end in the future, at the stamped moment) cannot be extended or
// routed back to life; list says it is removed.
func TestRemovedWithinMargin(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	for name, store := range stores(t) {
		t.Run(name, func(t *testing.T) {
			mustCtl(t, store, t0, "create", "pr-1", "-actor", "ci", "-service", "cart=h:1")
			mustCtl(t, store, t0.Add(time.Hour), "remove", "pr-1")
			soon := t0.Add(time.Hour + time.Second) // before removedAt, hour+5s
			for _, args := range [][]string{
				{"extend", "pr-1", "-ttl", "24h"},
				{"route", "pr-1", "-service", "orders=h:2"},
			} {
				if code, out := ctl(t, store, soon, args...); code != exitNotFound {
					t.Fatalf("%s within the margin of the removal: exit %d: %s", args[0], code, out)
				}
			}
			if out := mustCtl(t, store, soon, "list"); !strings.Contains(out, "pr-1\tremoved") {
				t.Fatalf("list: %s", out)
			}
			sb := listed(t, store, soon)["pr-1"]
			if !sb.Expires.Equal(t0.Add(time.Hour+5*time.Second)) || len(sb.Services) != 1 || !sb.Services["cart"].RemovedAt.Equal(sb.Expires) {
				t.Fatalf("the removed sandbox changed: %+v", sb)
			}
		})
	}
}

// TestJSONErrors: with -json every failure is a JSON object on stdout
// naming the exit status, which is the documented one.
func TestJSONErrors(t *testing.T) {
	dir := t.TempDir()
	file := "file:" + filepath.Join(dir, "routes.json")
	now := time.Now()
	mustCtl(t, file, now, "create", "pr-1", "-actor", "ci")
	for name, tc := range map[string]struct {
		store string
		args  []string
		exit  int
	}{
		"bad ID on remove":         {file, []string{"remove", "PR_1"}, exitUsage},
		"bad ID on extend":         {file, []string{"extend", "../x"}, exitUsage},
		"ttl within the margin":    {file, []string{"create", "pr-2", "-actor", "ci", "-ttl", "3s"}, exitUsage},
		"extend within the margin": {file, []string{"extend", "pr-1", "-ttl", "5s"}, exitUsage},
		"unknown flag":             {file, []string{"list", "-x"}, exitUsage},
		"bad store":                {"etcd://", []string{"list"}, exitUsage},
		"not found":                {file, []string{"extend", "pr-404"}, exitNotFound},
		"exists":                   {file, []string{"create", "pr-1", "-actor", "ci"}, exitExists},
		"store fails":              {"file:" + filepath.Join(dir, "missing", "routes.json"), []string{"create", "pr-3", "-actor", "ci"}, exitFailed},
		"etcd unreachable":         {"etcd://127.0.0.1:1/sandboxkit/routes/", []string{"-timeout", "1s", "list"}, exitFailed},
	} {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), append([]string{"-store", tc.store, "-json"}, tc.args...),
				func(string) string { return "" }, func() time.Time { return now }, &out, &errOut)
			var got struct {
				Error string
				Exit  int
			}
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("stdout is not JSON: %v: %q (stderr %q)", err, out.String(), errOut.String())
			}
			if code != tc.exit || got.Exit != code || got.Error == "" || !strings.Contains(errOut.String(), got.Error) {
				t.Fatalf("exit %d (JSON says %d), want %d; error %q; stderr %q", code, got.Exit, tc.exit, got.Error, errOut.String())
			}
		})
	}
}

// TestEtcdPrefixWithoutSlash: a store spec whose prefix lacks the final
// slash writes under the prefix the tables watch, not beside it.
func TestEtcdPrefixWithoutSlash(t *testing.T) {
	c, store := startEtcd(t)
	mustCtl(t, strings.TrimSuffix(store, "/"), time.Now(), "create", "pr-1", "-actor", "ci")
	resp, err := c.Get(context.Background(), "/sandboxkit/routes/pr-1")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the sandbox is not under /sandboxkit/routes/: %v %v", resp, err)
	}
}

// TestRemovedSandboxErrorsSayWhatToDo: a sandbox that was removed (or
// expired) but not purged is still listed, so "no such sandbox" alone
// contradicts list, and create's "or extend it" sends the user to a
// command that refuses too. Each error says the sandbox was removed and
// that a new sandbox needs another ID, as the README's CI job does.
func TestRemovedSandboxErrorsSayWhatToDo(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	store := "file:" + filepath.Join(t.TempDir(), "routes.json")
	mustCtl(t, store, t0, "create", "pr-1", "-actor", "ci", "-service", "cart=h:1")
	if code, out := ctl(t, store, t0.Add(time.Minute), "create", "pr-1", "-actor", "ci"); code != exitExists || !strings.Contains(out, "route") {
		t.Errorf("create of a live sandbox: exit %d, want %d and a hint at route: %s", code, exitExists, out)
	}
	mustCtl(t, store, t0.Add(time.Hour), "remove", "pr-1")
	later := t0.Add(time.Hour + time.Minute)
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"create", "pr-1", "-actor", "ci"}, exitExists},
		{[]string{"extend", "pr-1", "-ttl", "24h"}, exitNotFound},
		{[]string{"route", "pr-1", "-service", "orders=h:2"}, exitNotFound},
	} {
		code, out := ctl(t, store, later, tc.args...)
		if code != tc.code {
			t.Errorf("%s of a removed sandbox: exit %d, want %d: %s", tc.args[0], code, tc.code, out)
		}
		if !strings.Contains(out, "removed or expired (it ends 2026-12-06T04:00:05Z)") || !strings.Contains(out, "another ID") || strings.Contains(out, "extend it") {
			t.Errorf("%s of a removed sandbox: the error does not say it was removed and that a new one needs another ID: %s", tc.args[0], out)
		}
	}
}
