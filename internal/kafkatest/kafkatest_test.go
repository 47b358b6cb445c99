package kafkatest_test

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRoundTrip proves the broker speaks the protocol kafka-go needs: a
// topic is created, a message with headers is produced and consumed by a
// group reader, and the commit is visible to a second group member later.
func TestRoundTrip(t *testing.T) {
	addrs := kafkatest.Start(t)
	topic := kafkatest.Topic(t, addrs, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	w := kafkatest.Writer(t, addrs, topic)
	want := kafka.Message{Key: []byte("k"), Value: []byte("v"), Headers: []kafka.Header{{Key: "h", Value: []byte("x")}}}
	if err := w.WriteMessages(ctx, want); err != nil {
		t.Fatal(err)
	}

	group := kafkatest.UniqueName("g")
	r := kafka.NewReader(kafkatest.ReaderConfig(addrs, topic, group))
	got, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Key) != "k" || string(got.Value) != "v" || len(got.Headers) != 1 || string(got.Headers[0].Value) != "x" {
		t.Fatalf("got %+v", got)
	}
	if err := r.CommitMessages(ctx, got); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	tr := kafkatest.Transport()
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(addrs...), Transport: tr}
	resp, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {got.Partition}}})
	if err != nil {
		t.Fatal(err)
	}
	if ps := resp.Topics[topic]; len(ps) != 1 || ps[0].CommittedOffset != got.Offset+1 {
		t.Fatalf("committed offsets %+v, want %d", resp.Topics, got.Offset+1)
	}
}

func TestUniqueName(t *testing.T) {
	a, b := kafkatest.UniqueName("Test/a b"), kafkatest.UniqueName("Test/a b")
	if a == b {
		t.Fatalf("two names are both %q", a)
	}
	for _, c := range a {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			t.Fatalf("%q holds %q", a, c)
		}
	}
}

// TestLibraryDoesNotImportBroker: no package of the library, outside its
// test files, depends on the embedded broker; only this package (a test
// helper) and the demos under examples/ do.
func TestLibraryDoesNotImportBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const module = "github.com/sandboxkit/sandboxkit"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		pkg := fields[0]
		if pkg == module+"/internal/kafkatest" || strings.HasPrefix(pkg, module+"/examples/") {
			continue
		}
		checked++
		if slices.ContainsFunc(fields[1:], func(dep string) bool { return strings.HasPrefix(dep, "github.com/twmb/franz-go/pkg/kfake") }) {
			t.Errorf("%s depends on the test broker github.com/twmb/franz-go/pkg/kfake", pkg)
		}
	}
	if checked < 10 {
		t.Fatalf("checked %d packages: go list listed too few", checked)
	}
}
