// Package kafkatest starts a Kafka broker for sandboxkit's tests and
// examples: the in-process kfake broker (github.com/twmb/franz-go/pkg/kfake),
// which speaks the real Kafka protocol over TCP on 127.0.0.1, or a real
// cluster named by the SANDBOXKIT_TEST_KAFKA_BROKERS environment variable
// (comma-separated host:port list).
//
// It also builds kafka-go readers and writers configured for tests: short
// batch, wait, heartbeat and session timeouts, so that group joins and
// writes take milliseconds rather than the client's production defaults of
// seconds.
//
// The library's packages import it from their test files only (kafkamw's
// runnable examples included), so that none of them depends on the test
// broker (TestLibraryDoesNotImportBroker checks it); the demos under
// examples/ start theirs with [NewBroker].
package kafkatest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// EnvBrokers names the environment variable that points the tests at a real
// cluster instead of the embedded broker.
const EnvBrokers = "SANDBOXKIT_TEST_KAFKA_BROKERS"

// DefaultPartitions is how many partitions the embedded broker gives a topic
// created without a count.
const DefaultPartitions = 3

// NewBroker starts the embedded broker on 127.0.0.1 with one node, topic
// auto-creation and group session timeouts down to 10ms, and returns its
// address and a function that stops it. When [EnvBrokers] is set it starts
// nothing and returns those brokers and a no-op close.
//
// It is the variant for main programs and examples; tests use [Start].
func NewBroker() (addrs []string, closeFn func(), err error) {
	if env := os.Getenv(EnvBrokers); env != "" {
		for _, a := range strings.Split(env, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) == 0 {
			return nil, nil, fmt.Errorf("kafkatest: %s=%q names no broker", EnvBrokers, env)
		}
		return addrs, func() {}, nil
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(DefaultPartitions),
		kfake.GroupMinSessionTimeout(10*time.Millisecond),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("kafkatest: starting kfake: %w", err)
	}
	return c.ListenAddrs(), c.Close, nil
}

// Start starts a broker as [NewBroker] does and stops it when tb's test
// ends. It fails tb when the broker cannot start.
func Start(tb testing.TB) []string {
	tb.Helper()
	addrs, closeFn, err := NewBroker()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(closeFn)
	return addrs
}

// Transport returns a kafka-go transport of its own, so that a test's
// connections are closed at its end (kafka.DefaultTransport keeps its idle
// connections, and goroutines, for the life of the process). Close its idle
// connections when done.
func Transport() *kafka.Transport {
	return &kafka.Transport{DialTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}
}

// CreateTopic creates topic with the given number of partitions (one
// replica) and waits until its partitions have leaders. A topic that already
// exists is not an error.
func CreateTopic(ctx context.Context, addrs []string, topic string, partitions int) error {
	tr := Transport()
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(addrs...), Transport: tr, Timeout: 10 * time.Second}
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}},
	})
	if err != nil {
		return fmt.Errorf("kafkatest: creating topic %s: %w", topic, err)
	}
	if err := resp.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("kafkatest: creating topic %s: %w", topic, err)
	}
	for {
		md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) == partitions {
			ready := true
			for _, p := range md.Topics[0].Partitions {
				ready = ready && p.Error == nil && p.Leader.Host != ""
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkatest: topic %s not ready: %w", topic, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Topic creates a topic with a unique name derived from the test's name and
// returns the name.
func Topic(tb testing.TB, addrs []string, partitions int) string {
	tb.Helper()
	name := UniqueName(tb.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := CreateTopic(ctx, addrs, name, partitions); err != nil {
		tb.Fatal(err)
	}
	return name
}

// UniqueName returns prefix, cut down to letters, digits, '.', '_' and '-',
// with a random suffix: a valid topic or group name that no other run uses.
func UniqueName(prefix string) string {
	var b strings.Builder
	for _, c := range prefix {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
			b.WriteRune(c)
		default:
			b.WriteByte('-')
		}
		if b.Len() >= 100 {
			break
		}
	}
	b.WriteByte('-')
	b.WriteString(strings.ToLower(rand.Text()[:10]))
	return b.String()
}

// ReaderConfig returns a group reader configuration for tests: short
// heartbeat, session, rebalance and fetch waits, no partition watching,
// reading a new group from the first offset, synchronous commits.
func ReaderConfig(addrs []string, topic, group string) kafka.ReaderConfig {
	return kafka.ReaderConfig{
		Brokers:               addrs,
		Topic:                 topic,
		GroupID:               group,
		MaxWait:               50 * time.Millisecond,
		ReadBatchTimeout:      time.Second,
		HeartbeatInterval:     100 * time.Millisecond,
		SessionTimeout:        2 * time.Second,
		RebalanceTimeout:      2 * time.Second,
		JoinGroupBackoff:      50 * time.Millisecond,
		ReadBackoffMin:        10 * time.Millisecond,
		ReadBackoffMax:        100 * time.Millisecond,
		WatchPartitionChanges: false,
		StartOffset:           kafka.FirstOffset,
	}
}

// NewWriter returns a writer to topic for tests and examples: batches flush
// after 2ms instead of kafka-go's 1s, every write waits for the broker's
// acknowledgement, and the writer has a transport of its own. Close it with
// the returned function, which also closes the transport's connections.
func NewWriter(addrs []string, topic string) (*kafka.Writer, func()) {
	tr := Transport()
	w := &kafka.Writer{
		Addr:         kafka.TCP(addrs...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		BatchTimeout: 2 * time.Millisecond,
		BatchSize:    1000,
		RequiredAcks: kafka.RequireAll,
		Transport:    tr,
	}
	return w, func() {
		w.Close()
		tr.CloseIdleConnections()
	}
}

// Writer returns [NewWriter]'s writer and closes it when tb's test ends.
func Writer(tb testing.TB, addrs []string, topic string) *kafka.Writer {
	w, closeFn := NewWriter(addrs, topic)
	tb.Cleanup(closeFn)
	return w
}
