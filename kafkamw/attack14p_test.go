package kafkamw

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// a14p: attacks on markers.plain (the untagged fast path for messages with
// headers) and on Reader.send (a synchronous commit racing Close).

// tokenBytes are the bytes an RFC 7230 token (a codec's header name or
// baggage key, see propagation's isToken) may hold.
const tokenBytes = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"

func randToken(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = tokenBytes[rng.IntN(len(tokenBytes))]
	}
	return string(b)
}

// randCodec is a codec of random names: a dedicated header or none, ID,
// actor, origin and ticket keys of any token bytes (digits, symbols,
// upper case, one byte long), Signadot's and Okteto's keys, the mirror.
func randCodec(rng *rand.Rand) (*propagation.Codec, []propagation.Option) {
	for {
		var opts []propagation.Option
		short := func() string {
			if rng.IntN(3) == 0 {
				return randToken(rng, 1+rng.IntN(2))
			}
			return randToken(rng, 1+rng.IntN(14))
		}
		switch rng.IntN(4) {
		case 0:
			opts = append(opts, propagation.WithHeader(""))
		case 1:
			opts = append(opts, propagation.WithHeader(short()))
		case 2: // the default header
		default:
			opts = append(opts, propagation.WithHeader(strings.ToUpper(short())))
		}
		if rng.IntN(4) != 0 {
			opts = append(opts, propagation.WithBaggageKeys(short(), short(), short()))
		}
		if rng.IntN(2) == 0 {
			opts = append(opts, propagation.WithTicketKey(short()))
		}
		if rng.IntN(3) == 0 {
			opts = append(opts, propagation.WithSignadot())
		}
		if rng.IntN(3) == 0 {
			opts = append(opts, propagation.WithOkteto())
		}
		if rng.IntN(3) == 0 {
			opts = append(opts, propagation.WithBaggageMirror())
		}
		if rng.IntN(4) == 0 {
			opts = append(opts, propagation.KeepForeignRoutingKeys())
		}
		c, err := propagation.NewCodec(opts...)
		if err == nil {
			return c, opts
		}
	}
}

// spellings are header keys close to the codec's marker keys: each key
// (and its Jaeger, OpenTracing and underscore forms, the foreign headers)
// in random case, with runes that fold to its letters, with a byte of
// whitespace or control before or after, truncated, and random keys of
// any bytes.
func spelling(rng *rand.Rand, c *propagation.Codec) string {
	var base []string
	base = append(base, "baggage", propagation.SignadotJaegerHeader, propagation.SignadotDatadogHeader)
	base = append(base, c.KeyHeaders()...)
	if h := c.Header(); h != "" {
		base = append(base, h, strings.ReplaceAll(h, "-", "_"))
	}
	for _, k := range c.Keys() {
		base = append(base, "uberctx-"+k, "ot-baggage-"+k, strings.ReplaceAll(k, ".", "_"))
	}
	k := base[rng.IntN(len(base))]
	if rng.IntN(8) == 0 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return string(b)
	}
	var sb strings.Builder
	for _, r := range k {
		switch {
		case (r == 's' || r == 'S') && rng.IntN(3) == 0:
			sb.WriteRune('ſ')
		case (r == 'k' || r == 'K') && rng.IntN(3) == 0:
			sb.WriteRune('\u212a')
		case rng.IntN(2) == 0:
			sb.WriteString(strings.ToUpper(string(r)))
		default:
			sb.WriteRune(r)
		}
	}
	out := sb.String()
	junk := []string{" ", "\t", "\x00", "\r", "\n", "\x7f", "\xff", "\u00a0"}
	switch rng.IntN(6) {
	case 0:
		out = junk[rng.IntN(len(junk))] + out
	case 1:
		out += junk[rng.IntN(len(junk))]
	case 2:
		if len(out) > 1 {
			out = out[:1+rng.IntN(len(out)-1)]
		}
	}
	return out
}

// plainBreaks reports what, if anything, reads hs as carrying markers of
// c when markers.plain passes it: scanKey, the codec through the
// package's carrier, or Strip (which removes what is ours).
func plainBreaks(c *propagation.Codec, hs []kafka.Header) string {
	m := newMarkers(c)
	if !m.plain(hs) {
		return ""
	}
	if st := m.scan(hs); st != noMarkers {
		return "scanKey reads it"
	}
	got, err := c.Read(&carrier{list: hs})
	if err != nil || got.Found {
		return "the codec reads it"
	}
	stripped := &carrier{list: append([]kafka.Header(nil), hs...)}
	c.Strip(stripped)
	if len(stripped.list) != len(hs) {
		return "Strip removes part of it"
	}
	return ""
}

// TestA14pPlainRandomCodecs: a differential of markers.plain over random
// codecs (keys of digits, symbols, upper case, one byte) and header keys
// near their marker keys. plain may pass a list only when nothing the
// package uses on a consumed message (scanKey, the codec's Read through
// the package's carrier, Strip) finds anything of ours there. The test can
// fail: with plain's first-byte table cleared of the upper-case forms
// (first(k[0]) only) it reports an upper-cased key as passed; counts of
// both answers are checked so that neither side is vacuous.
func TestA14pPlainRandomCodecs(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 0x9e3779b97f4a7c15))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	var passed, held int
	for i := 0; i < n; i++ {
		c, _ := randCodec(rng)
		hs := make([]kafka.Header, 1+rng.IntN(4))
		for j := range hs {
			hs[j].Key = spelling(rng, c)
			switch rng.IntN(3) {
			case 0:
				hs[j].Value = []byte(c.Keys()[0] + "=pr-1")
			case 1:
				hs[j].Value = []byte("pr-1")
			}
		}
		if rng.IntN(3) == 0 {
			hs = append([]kafka.Header{{Key: "traceparent", Value: []byte("00")}}, hs...)
		}
		if m := newMarkers(c); m.plain(hs) {
			passed++
		} else {
			held++
		}
		if why := plainBreaks(c, hs); why != "" {
			t.Fatalf("codec %v %v: plain passed %q, but %s", c.Fields(), c.Keys(), keysOf(hs), why)
		}
	}
	if passed < n/50 || held < n/50 {
		t.Fatalf("plain passed %d lists and held %d: the differential is vacuous", passed, held)
	}
	t.Logf("plain passed %d lists, held %d", passed, held)
}

// FuzzA14pPlainCodec: FuzzPlainHeaders with the codec fuzzed too: any
// dedicated header name and ID key the codec accepts, and any header key.
func FuzzA14pPlainCodec(f *testing.F) {
	for _, s := range [][3]string{
		{"X-Env", "Q", "q"}, {"x-env", "9id", "9ID"}, {"", "~k", "~\u212a"}, {"_", "s", "ſ"},
		{"sandbox-id", "sandbox.id", " sandbox.id"}, {"a", "b", "B"}, {"%", "+", "%2B"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, header, id, key string) {
		c, err := propagation.NewCodec(propagation.WithHeader(header), propagation.WithBaggageKeys(id, id+"a", id+"o"), propagation.WithSignadot())
		if err != nil {
			return
		}
		for _, hs := range [][]kafka.Header{
			{{Key: key, Value: []byte("pr-1")}},
			{{Key: "traceparent", Value: []byte("00")}, {Key: key, Value: []byte(id + "=pr-1")}},
		} {
			if why := plainBreaks(c, hs); why != "" {
				t.Fatalf("codec header %q id %q: plain passed %q, but %s", header, id, key, why)
			}
		}
	})
}

// TestA14pPlainReaderTableNeverSynced: a baseline reader whose table never
// synced takes a message with foreign headers only (plain) on the fast
// path without waiting for the table, and a message carrying a marker
// key in an odd spelling (upper case, a folding rune, one byte long keys
// of a custom codec) is not taken as plain: it goes to decide, which waits
// for the table (ending with the fetch context here) or skips it as
// unreadable (then the source's end). The second half fails if plain
// passed such a message: a baseline reader returns it as its own.
func TestA14pPlainReaderTableNeverSynced(t *testing.T) {
	c, err := propagation.NewCodec(propagation.WithHeader("X-Env"), propagation.WithBaggageKeys("q", "w", "e"))
	if err != nil {
		t.Fatal(err)
	}
	table := unsyncedTable14p(t)
	at := time.Now().Add(-time.Minute)
	for _, key := range []string{"Q", "X-ENV", "x-env", "uberctx-Q", "OT-BAGGAGE-q", "BAGGAGE"} {
		r := bareReader(t, table, "orders", WithCodec(c))
		plainMsg := kafka.Message{Topic: "t", Offset: 0, Time: at, Headers: []kafka.Header{{Key: "traceparent", Value: []byte("00")}, {Key: "content-type", Value: []byte("json")}}}
		marked := kafka.Message{Topic: "t", Offset: 1, Time: at, Headers: []kafka.Header{{Key: "traceparent", Value: []byte("00")}, {Key: key, Value: []byte("q=pr-42")}}}
		stream := []kafka.Message{plainMsg, marked}
		next := 0
		src := sourceFunc(func(context.Context) (kafka.Message, error) {
			if next == len(stream) {
				return kafka.Message{}, io.EOF
			}
			next++
			return stream[next-1], nil
		})
		var msg kafka.Message
		if _, err := r.fetch(context.Background(), src, &msg); err != nil || msg.Offset != 0 {
			t.Fatalf("%q: the plain message: offset %d, %v", key, msg.Offset, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err := r.fetch(ctx, src, &msg)
		cancel()
		if err == nil && msg.Offset == 1 {
			t.Errorf("codec x-env/q: a message with header %q was returned as untagged by a reader whose table never synced", key)
		}
	}
}

// fakeCommit models kafka-go v0.4.51's Reader.CommitMessages with
// synchronous commits once its request is queued (reader.go 907-912): it
// waits for the commit loop's answer or ctx's end, whichever select picks.
func fakeCommit(errch <-chan error) func(context.Context, ...kafka.Message) error {
	return func(ctx context.Context, _ ...kafka.Message) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errch:
			return err
		}
	}
}

func goneReader(t *testing.T) *Reader {
	r := bareReader(t, routes14(t), "orders")
	r.gone, r.markGone = context.WithCancel(context.Background())
	return r
}

// TestA14pAnsweredCommitRacingClose: kafka-go's commit loop, told to stop
// by Close, drains the queued requests, commits them and answers each (a
// buffered channel), and only then does Close return and mark the reader
// gone. A committing goroutine that had queued its request but had not
// yet reached its wait for the answer (preempted, a loaded machine) then
// finds both the answer (nil: committed) and its context's end ready, and
// Go's select picks either: kafka-go gives no way to read the answer once
// the context has ended. So the commit is reported as it was applied
// (nil) or as errClosedWhileCommitting, which says it may or may not have
// been applied (documented there), never as another error and never
// recorded in the ledger unless reported applied. Modelled with
// kafka-go's own select; the window in a real run is that goroutine's
// delay across a broker round trip. Both outcomes are seen over the
// rounds, so the model does reach the window.
func TestA14pAnsweredCommitRacingClose(t *testing.T) {
	var applied, closed int
	const rounds = 64
	for range rounds {
		r := goneReader(t)
		errch := make(chan error, 1)
		commit := fakeCommit(errch)
		err := r.send(context.Background(), func(ctx context.Context, msgs ...kafka.Message) error {
			errch <- nil // the final drain committed and answered it
			r.markGone() // Close returned
			select {     // AfterFunc ran before the goroutine went on
			case <-ctx.Done():
			case <-time.After(time.Minute): // send no longer ends a commit at Close
			}
			return commit(ctx, msgs...)
		}, []kafka.Message{{Topic: "t", Offset: 1}})
		switch {
		case err == nil:
			applied++
		case errors.Is(err, errClosedWhileCommitting):
			closed++
		default:
			t.Fatalf("a commit kafka-go applied while Close ran returned %v, want nil or %v", err, errClosedWhileCommitting)
		}
	}
	if applied == 0 || closed == 0 {
		t.Errorf("over %d rounds %d reported applied and %d closed: the model no longer reaches the window (select picks either ready case at random)", rounds, applied, closed)
	}
}

// TestA14pSendHolds: what send must keep. A commit answered before Close is
// nil; one never answered returns errClosedWhileCommitting once the reader
// is gone, not at its context's end; a caller's own cancellation is its
// own error, not "closed"; a commit sent after Close returns at once; an
// asynchronous reader's commits are passed through untouched (no context
// wrapped). None leaves a goroutine (AfterFunc) behind. Each part can
// fail: with send calling the group reader directly the never-answered
// commit waits for ever (the select below times out after a minute).
func TestA14pSendHolds(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	msgs := []kafka.Message{{Topic: "t", Offset: 1}}

	// Answered before Close.
	r := goneReader(t)
	errch := make(chan error, 1)
	errch <- nil
	if err := r.send(context.Background(), fakeCommit(errch), msgs); err != nil {
		t.Errorf("answered commit: %v", err)
	}
	// Answered with a broker error before Close: that error, not "closed".
	boom := errors.New("rebalance in progress")
	errch <- boom
	if err := r.send(context.Background(), fakeCommit(errch), msgs); !errors.Is(err, boom) {
		t.Errorf("failed commit: %v, want %v", err, boom)
	}

	// Never answered, Close marks the reader gone.
	done := make(chan error, 1)
	queued := make(chan struct{})
	go func() {
		done <- r.send(context.Background(), func(ctx context.Context, m ...kafka.Message) error {
			close(queued)
			return fakeCommit(nil)(ctx, m...)
		}, msgs)
	}()
	<-queued
	r.markGone()
	select {
	case err := <-done:
		if !errors.Is(err, errClosedWhileCommitting) {
			t.Errorf("unanswered commit after Close: %v, want %v", err, errClosedWhileCommitting)
		}
	case <-time.After(time.Minute):
		t.Fatal("an unanswered commit did not return once the reader was gone")
	}

	// After Close: at once.
	if err := r.send(context.Background(), fakeCommit(nil), msgs); !errors.Is(err, errClosedWhileCommitting) {
		t.Errorf("commit after Close: %v", err)
	}
	// The caller's own deadline wins over "closed" when it is what ended.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.send(ctx, fakeCommit(nil), msgs); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v, want context.Canceled", err)
	}

	// Asynchronous commits: the caller's context itself.
	ar := goneReader(t)
	ar.rcfg.CommitInterval = time.Second
	ar.markGone()
	cctx := context.WithValue(context.Background(), ctxKey14p{}, 1)
	if err := ar.send(cctx, func(got context.Context, _ ...kafka.Message) error {
		if got != cctx {
			t.Error("an asynchronous commit's context was wrapped")
		}
		return nil
	}, msgs); err != nil {
		t.Error(err)
	}
}

type ctxKey14p struct{}

// unsyncedTable14p is a route table that holds pr-42 for orders but was
// never marked synced: decide waits for it.
func unsyncedTable14p(t *testing.T) *routes.Table {
	t.Helper()
	table := routes.New()
	if err := table.Update([]routes.Sandbox{{ID: "pr-42", Services: map[string]routes.Route{"orders": {Upstream: "h:1", ActiveFrom: time.Now().Add(-time.Hour)}}}}); err != nil {
		t.Fatal(err)
	}
	return table
}
