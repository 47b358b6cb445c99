package kafkamw_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/routes"
)

// writeDoc publishes a route document atomically.
func writeDoc(t *testing.T, path string, doc routes.Document) {
	t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// syncTable starts a table kept in sync with src every interval, until the
// test ends.
func syncTable(t *testing.T, src routes.Source, every time.Duration) *routes.Table {
	t.Helper()
	table := routes.New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); table.Sync(ctx, src, routes.Every(every)) }()
	t.Cleanup(func() { cancel(); <-done })
	return table
}

// TestChurn: while messages flow, sandbox A's route for the service is
// activated, A's reader starts late, is restarted, the route is removed
// and the reader stops. The baseline and A's reader each follow the route
// file with a table of their own, syncing at different moments. Nothing is
// processed twice, nothing is lost, and every message of A whose time
// falls in the route's window is processed by A's reader, including those
// produced between the activation and the reader's start. Run in both
// modes: in the split mode A's readers read only what the baseline
// forwarded to A's topic, which is created before A's first reader starts
// and waits for it.
func TestChurn(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) { testChurn(t, mode.opts...) })
	}
}

// modes are the reader modes the churn and restart tests run in: the
// options given to every reader.
var modes = []struct {
	name  string
	split bool
	opts  []kafkamw.ReaderOption
}{
	{"filter", false, nil},
	{"split", true, []kafkamw.ReaderOption{kafkamw.WithSplit(kafkamw.Split{})}},
}

func testChurn(t *testing.T, modeOpts ...kafkamw.ReaderOption) {
	split := len(modeOpts) > 0
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 2)
	path := filepath.Join(t.TempDir(), "routes.json")
	sandboxes := func(orders *routes.Route) routes.Document {
		a := routes.Sandbox{ID: sbA.ID, Actor: sbA.Actor, Services: map[string]routes.Route{"cart": {Upstream: "10.0.0.1:8080"}}}
		if orders != nil {
			a.Services[service] = *orders
		}
		return routes.Document{Sandboxes: []routes.Sandbox{a, {ID: sbB.ID, Actor: sbB.Actor}}}
	}
	writeDoc(t, path, sandboxes(nil))
	baseTable, sbTable := syncTable(t, routes.File(path), 97*time.Millisecond), syncTable(t, routes.File(path), 151*time.Millisecond)
	waitFor(t, 5*time.Second, "tables loaded", func() bool {
		_, ok1 := baseTable.Sandbox(sbA.ID)
		_, ok2 := sbTable.Sandbox(sbA.ID)
		return ok1 && ok2
	})

	w := newWriter(t, kafkatest.Writer(t, addrs, topic))
	tags, times := map[string]string{}, map[string]time.Time{}
	group := kafkatest.UniqueName("orders")
	newReader := func(table *routes.Table, opts ...kafkamw.ReaderOption) *kafkamw.Reader {
		r, err := kafkamw.NewReader(kafkatest.ReaderConfig(addrs, topic, group), table, service, append(append(opts, modeOpts...),
			kafkamw.WithSkipCommitInterval(20*time.Millisecond))...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	base := startConsumer(t, "baseline", newReader(baseTable), 5)

	// countA counts the messages of A produced at or after from.
	countA := func(from time.Time) int {
		n := 0
		for v, id := range tags {
			if id == sbA.ID && !times[v].Before(from) {
				n++
			}
		}
		return n
	}
	ms := func(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()) }

	produceMixed(t, w, "p1", 30, tags, times) // before activation

	// Activation, published before it takes effect.
	activeFrom := ms(time.Now().Add(40 * time.Millisecond))
	route := routes.Route{Upstream: "10.0.0.1:9090", ActiveFrom: activeFrom}
	writeDoc(t, path, sandboxes(&route))
	for i := 0; countA(activeFrom) < 15; i++ { // activated, A's reader not started yet
		produceMixed(t, w, "p2-"+string(rune('a'+i)), 9, tags, times)
	}
	waitBeforeStart := countA(activeFrom)

	a1 := startConsumer(t, "sandbox", newReader(sbTable, kafkamw.AsSandbox(sbA.ID)), 3)
	produceMixed(t, w, "p3", 30, tags, times)
	waitFor(t, 20*time.Second, "A's first reader to catch up", func() bool { return a1.r.Counts().Delivered >= int64(waitBeforeStart) })
	gotA1 := a1.stop() // restart: the second reader resumes from the group's commits

	a2 := startConsumer(t, "sandbox", newReader(sbTable, kafkamw.AsSandbox(sbA.ID)), 3)
	produceMixed(t, w, "p4", 30, tags, times)

	// Removal, published before it takes effect.
	removedAt := ms(time.Now().Add(40 * time.Millisecond))
	route.RemovedAt = removedAt
	writeDoc(t, path, sandboxes(&route))
	for i := 0; countA(removedAt) < 15; i++ {
		produceMixed(t, w, "p5-"+string(rune('a'+i)), 9, tags, times)
	}
	// A's reader stops once it has decided everything produced so far
	// from the activation on (it never saw anything before it).
	// In the split mode they see only A's messages of the window, which
	// the baseline forwarded.
	seenA := int64(0)
	for v := range tags {
		inWindow := tags[v] == sbA.ID && times[v].Before(removedAt)
		if !times[v].Before(activeFrom) && (!split || inWindow) {
			seenA++
		}
	}
	waitFor(t, 20*time.Second, "A's reader to decide every message from the activation on", func() bool {
		return a1.seen()+a2.seen() >= seenA
	})
	gotA2 := a2.stop()
	produceMixed(t, w, "p6", 30, tags, times) // A's reader is gone

	waitFor(t, 20*time.Second, "the baseline to decide every message", func() bool { return base.seen() >= int64(len(tags)) })
	gotBase := base.stop()

	owner := func(v string) string {
		if tags[v] == sbA.ID && !times[v].Before(activeFrom) && times[v].Before(removedAt) {
			return "sandbox"
		}
		return "baseline"
	}
	checkOwners(t, tags, owner, gotBase, gotA1, gotA2)

	// The test is only worth something if every phase happened.
	var beforeStart, inWindow, outside int
	for _, p := range append(gotA1, gotA2...) {
		if times[p.value].Before(times["p3-0"]) {
			beforeStart++
		}
		inWindow++
	}
	for _, p := range gotBase {
		if tags[p.value] == sbA.ID {
			outside++
		}
	}
	if beforeStart == 0 || len(gotA1) == 0 || len(gotA2) == 0 || outside == 0 {
		t.Errorf("phases not exercised: A processed %d before its reader started, %d by the first reader, %d by the second; baseline processed %d of A",
			beforeStart, len(gotA1), len(gotA2), outside)
	}
	if got := a1.r.Counts().Delivered + a1.r.Counts().Skipped + a2.r.Counts().Delivered + a2.r.Counts().Skipped; got != seenA {
		t.Errorf("A's readers decided %d messages, want %d: history replayed or a message decided twice", got, seenA)
	}
	if split {
		// The broker cost: A's readers fetched A's messages only, and the
		// baseline forwarded each exactly once.
		// (The first reader may have fetched a few it had not decided
		// when it stopped, which the second fetches again.)
		if got := a1.r.Stats().Messages + a2.r.Stats().Messages; got < seenA || got > seenA+10 {
			t.Errorf("A's readers fetched %d messages from the broker, want the %d forwarded (and a few again after the restart)", got, seenA)
		}
		if got := base.r.Counts().Forwarded; got != seenA {
			t.Errorf("baseline forwarded %d, want %d", got, seenA)
		}
	} else if got := base.r.Counts().Forwarded; got != 0 {
		t.Errorf("filter mode forwarded %d", got)
	}
	t.Logf("%d messages; A's readers processed %d (%d produced before they started), baseline %d (%d of A); waits: baseline %d, A %d",
		len(tags), inWindow, beforeStart, len(gotBase), outside, base.r.Counts().Waits, a1.r.Counts().Waits+a2.r.Counts().Waits)
}
