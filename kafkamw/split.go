package kafkamw

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// The split mode ([WithSplit]). The baseline reader, which reads every
// message of the topic anyway, forwards each message a sandbox's reader
// owns to that sandbox's topic ([SplitTopic]) and commits it once the
// broker has acknowledged the copy; a sandbox reader reads its own topic
// only. Both decide each message with the same decision as in the filter
// mode ([ownerOf], [role.fate]): the split mode only changes where a
// sandbox's messages are read from.
//
// This file holds the mode's options, its topic names, the sandbox
// reader's duplicate marks and its start; forward.go the baseline
// reader's forwarder, produce.go how it writes a batch of copies, and
// splittopic.go the sandbox topics it creates.

// HeaderSplitSource is the header the baseline reader adds to each
// message it forwards in the split mode: "<partition>/<offset>" of the
// original in the source topic.
const HeaderSplitSource = "sandboxkit-split-source"

// HeaderSplitTopic is the header the baseline reader adds to each copy,
// before [HeaderSplitSource], when its topic's or group's name has a
// dot: the source topic's name. Two such sources can share a sandbox
// topic: [SplitTopic] of topic "t" and group "b.c" is that of topic "t.b"
// and group "c" (names without dots cannot meet: a sandbox ID has none).
// A sandbox reader skips the copies of another source topic's messages
// (counted as Counts.Duplicates): it processed them, and skipped its own
// copies of the same coordinates as second copies. Only then: the
// header costs each sandbox reader two allocations per copy it reads
// (BenchmarkSandboxes/steady, about 5% of a pass's).
const HeaderSplitTopic = "sandboxkit-split-topic"

// maxTopicLen is the longest topic name Kafka accepts.
const maxTopicLen = 249

// ErrForward reports a message the baseline reader could not forward to
// its sandbox's topic in the split mode (the topic could not be created,
// or the broker did not acknowledge the copy). The reader keeps the
// message and forwards it again on the next FetchMessage. A copy the
// broker refuses as too large, alone in its record set, is not kept: it
// is given up as unforwardable (see "Split mode" in the package
// documentation).
var ErrForward = errors.New("kafkamw: forwarding to the sandbox's topic failed")

// Split configures the split mode ([WithSplit]). Its zero value gives each
// sandbox's topic the source topic's partition count and the broker's
// default replication factor.
type Split struct {
	// Partitions is the partition count of each sandbox's topic; 0 for
	// the source topic's. A message of source partition p goes to
	// partition p modulo the count, so that per-key order holds. A
	// sandbox's traffic is small: 1 gives each sandbox reader one fetch
	// loop and connection instead of one per partition
	// (BenchmarkSandboxes' mode=split-1p).
	Partitions int
	// ReplicationFactor of each sandbox's topic; 0 for the broker's
	// default.
	ReplicationFactor int
}

// WithSplit turns the split mode on (see "Split mode" in the package
// documentation): on the baseline reader, forwarding the messages each
// sandbox's reader owns to the sandbox's own topic; on a sandbox reader,
// reading that topic instead of the source. The reader's ReaderConfig must
// name one Topic (not GroupTopics), and the sandbox topic's name must be a
// valid Kafka topic name ([SplitTopic]); otherwise [NewReader] returns an
// [ErrConfig] error. Off by default.
func WithSplit(s Split) ReaderOption {
	return readerOption(func(c *readerConfig) {
		if s.Partitions < 0 || s.ReplicationFactor < 0 {
			c.fail(fmt.Errorf("WithSplit: negative Partitions (%d) or ReplicationFactor (%d)", s.Partitions, s.ReplicationFactor))
			return
		}
		c.split = &s
	})
}

// SplitTopic returns the topic of sandbox id's messages of topic for the
// baseline consumer group group in the split mode:
// "<topic>.<group>.sandbox.<id>", the sandbox group's name ([SandboxGroup])
// after the topic's. It is an error, wrapping [ErrConfig], when the result
// is not a valid Kafka topic name (characters other than ASCII letters,
// digits, '.', '_' and '-', or longer than 249): such a sandbox cannot be
// split, and its messages are not forwarded anywhere else.
func SplitTopic(topic, group, id string) (string, error) {
	if err := propagation.ValidateID(id); err != nil {
		return "", fmt.Errorf("%w: split topic: %w", ErrConfig, err)
	}
	name := topic + "." + SandboxGroup(group, id)
	if err := validTopic(name); err != nil {
		return "", fmt.Errorf("%w: split topic of %q for group %q and sandbox %q: %w", ErrConfig, topic, group, id, err)
	}
	return name, nil
}

// validTopic checks Kafka's rules for a topic name.
func validTopic(name string) error {
	if len(name) > maxTopicLen {
		return fmt.Errorf("%d characters, Kafka allows %d", len(name), maxTopicLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("character %q at %d is not allowed in a topic name", c, i)
		}
	}
	return nil
}

// marks is a split-mode sandbox reader's record, per source partition, of
// the first source offset whose forwarded copy it has not yet decided. A
// copy below its mark was decided before: a second copy the baseline
// forwarded again after a crash between its forward and its commit, or a
// message the group's filter-mode reader processed before the switch to
// the split mode (the marks start at the offsets the group committed on
// the source topic). Copies of one source partition reach one partition
// of the sandbox's topic in source order, so a mark only moves forward.
// nil outside a split-mode sandbox reader. Used under the fetch lock.
type marks struct {
	next   map[int]*int64 // by source partition; an entry, once made, is never replaced
	source string         // the source topic
	// The last source partition looked up and its mark: kafka-go hands
	// out runs of one partition, and two map lookups and a map write a
	// copy were a sixth of what a copy cost the reader
	// (BenchmarkFetchSplitCopies). last is nil until the first lookup
	// that found one.
	lastPart int
	last     *int64
}

// mark returns the mark of source partition part, nil when it has none.
func (m *marks) mark(part int) *int64 {
	if m.last != nil && m.lastPart == part {
		return m.last
	}
	p := m.next[part]
	if p != nil {
		m.lastPart, m.last = part, p
	}
	return p
}

// check returns the source coordinates of msg, a forwarded copy, and
// whether it was decided before. A message without readable coordinates
// (not forwarded by a baseline reader) is not a duplicate; ok is false.
// The coordinates are the last header of that name, the one the baseline
// added (copies forwarded before it dropped inherited ones may carry
// others before it). A copy whose [HeaderSplitTopic], the header before
// it, names another source topic is a duplicate: not this reader's
// (see HeaderSplitTopic); ok is false.
func (m *marks) check(msg *kafka.Message) (part int, off int64, dup, ok bool) {
	if m == nil {
		return 0, 0, false, false
	}
	for i := len(msg.Headers) - 1; i >= 0; i-- {
		if msg.Headers[i].Key != HeaderSplitSource {
			continue
		}
		if i > 0 && msg.Headers[i-1].Key == HeaderSplitTopic && string(msg.Headers[i-1].Value) != m.source {
			return 0, 0, true, false
		}
		part, off, ok := parseSource(msg.Headers[i].Value)
		if !ok {
			return 0, 0, false, false
		}
		next := m.mark(part)
		return part, off, next != nil && off < *next, true
	}
	return 0, 0, false, false
}

// parseSource reads a [HeaderSplitSource] value, "<partition>/<offset>",
// as strconv.Atoi and strconv.ParseInt(s, 10, 64) read its two halves
// (split at the first '/'): an optional sign, then decimal digits, within
// range. By hand, on the bytes: through strings.Cut, a string copy and
// strconv it cost a split-mode sandbox reader about 190 instructions
// more a copy (BenchmarkFetchSplitCopies).
func parseSource(v []byte) (part int, off int64, ok bool) {
	slash := bytes.IndexByte(v, '/')
	if slash < 0 {
		return 0, 0, false
	}
	p, ok1 := parseDecimal(v[:slash])
	off, ok2 := parseDecimal(v[slash+1:])
	if !ok1 || !ok2 || int64(int(p)) != p {
		return 0, 0, false
	}
	return int(p), off, true
}

// parseDecimal is strconv.ParseInt(string(b), 10, 64) without its error:
// ok is false where ParseInt fails.
func parseDecimal(b []byte) (int64, bool) {
	neg := false
	if len(b) > 0 && (b[0] == '+' || b[0] == '-') {
		neg = b[0] == '-'
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		if c < '0' || c > '9' || u > (1<<63)/10 {
			return 0, false
		}
		if u = u*10 + uint64(c-'0'); u > 1<<63 {
			return 0, false
		}
	}
	switch {
	case neg:
		return -int64(u), true // u = 1<<63 is math.MinInt64
	case u > math.MaxInt64:
		return 0, false
	}
	return int64(u), true
}

// advance records that the copy of source offset off of partition part
// is decided.
func (m *marks) advance(part int, off int64) {
	if m == nil {
		return
	}
	next := m.mark(part)
	switch {
	case next == nil && off >= 0: // a partition without a mark is at 0
		next = new(int64)
		m.next[part] = next
		m.lastPart, m.last = part, next
	case next == nil:
		return
	}
	if off >= *next {
		*next = off + 1
	}
}

// freeSplitSource lets a split-mode sandbox reader's last header list
// match a copy that differs from it only in its source coordinates (see
// lastHeaders.free): each copy has its own, and every copy was scanned
// for markers and looked up in the memo (BenchmarkFetchSplitCopies).
func (r *Reader) freeSplitSource() {
	if r.markers.inert(HeaderSplitSource) {
		r.last.free = HeaderSplitSource
	}
}

// prepareSplit readies a split-mode sandbox reader before it joins its
// group: it creates the sandbox's topic if no baseline reader has
// forwarded anything to it yet (so that the group has partitions to read
// and starts at their beginning), and starts its [marks] at the offsets
// its group committed on the source topic in the filter mode.
func (r *Reader) prepareSplit(ctx context.Context) error {
	tr := transport(r.rcfg.Dialer)
	// The transport's view of the cluster covers the two topics, not
	// every topic of the cluster (kafka-go's default), which it would
	// fetch again after creating the sandbox's.
	tr.MetadataTopics = []string{r.source, r.rcfg.Topic}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(r.rcfg.Brokers...), Transport: tr}
	fail := func(step string, err error) error {
		return fmt.Errorf("kafkamw: preparing the split topic %s of group %s: %s: %w", r.rcfg.Topic, r.group, step, err)
	}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: tr.MetadataTopics})
	if err != nil {
		return fail("metadata", err)
	}
	sn, exists := 0, false
	for _, t := range md.Topics {
		switch {
		case t.Name == r.source && t.Error != nil:
			return fail("source partitions", fmt.Errorf("metadata of %s: %w", r.source, t.Error))
		case t.Name == r.source:
			sn = len(t.Partitions)
		case t.Name == r.rcfg.Topic:
			exists = t.Error == nil && len(t.Partitions) > 0
		}
	}
	if sn == 0 {
		return fail("source partitions", fmt.Errorf("metadata of %s: no answer", r.source))
	}
	if !exists {
		n := sn
		if r.cfg.split.Partitions > 0 {
			n = r.cfg.split.Partitions
		}
		if err := createTopic(ctx, cl, r.rcfg.Topic, n, r.cfg.split.ReplicationFactor, sandboxTopicConfig(ctx, cl, r.source)); err != nil {
			return fail("create", err)
		}
	}
	ps := make([]int, sn)
	for p := range ps {
		ps[p] = p
	}
	of, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: r.group, Topics: map[string][]int{r.source: ps}})
	if err != nil {
		return fail("committed source offsets", err)
	}
	if of.Error != nil && !errors.Is(of.Error, kafka.GroupIdNotFound) {
		return fail("committed source offsets", of.Error)
	}
	m := &marks{next: make(map[int]*int64), source: r.source}
	for _, p := range of.Topics[r.source] {
		if p.Error == nil && p.CommittedOffset >= 0 {
			m.next[p.Partition] = &p.CommittedOffset
		}
	}
	r.marks = m
	return nil
}

// ReapSplitTopics deletes the sandbox topics of the split mode
// ([SplitTopic]) of cfg's Topic and GroupID whose sandbox is not in table
// (removed or expired), and returns their names. It touches only topics
// named by that rule for a valid sandbox ID: topics the split mode
// creates. table must have loaded from its source (else [ErrRoutesBehind]):
// an empty table would reap every sandbox's topic. Call it periodically
// (from sandbox teardown, or a loop), from one process or from all.
func ReapSplitTopics(ctx context.Context, cfg kafka.ReaderConfig, table *routes.Table) ([]string, error) {
	if table == nil || cfg.Topic == "" || cfg.GroupID == "" || len(cfg.Brokers) == 0 {
		return nil, fmt.Errorf("%w: ReapSplitTopics: needs a route table and a ReaderConfig with Brokers, Topic and GroupID", ErrConfig)
	}
	if table.SyncedAt().IsZero() {
		return nil, fmt.Errorf("%w: ReapSplitTopics: the route table has never loaded", ErrRoutesBehind)
	}
	tr := transport(cfg.Dialer)
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("kafkamw: ReapSplitTopics: metadata: %w", err)
	}
	prefix := cfg.Topic + "." + SandboxGroup(cfg.GroupID, "")
	var gone []string
	for _, t := range md.Topics {
		id, ok := strings.CutPrefix(t.Name, prefix)
		if !ok || propagation.ValidateID(id) != nil {
			continue
		}
		if _, live := table.Sandbox(id); live {
			continue
		}
		gone = append(gone, t.Name)
	}
	if len(gone) == 0 {
		return nil, nil
	}
	resp, err := cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: gone})
	if err != nil {
		return nil, fmt.Errorf("kafkamw: ReapSplitTopics: %w", err)
	}
	var deleted []string
	var errs []error
	for _, name := range gone {
		if err := resp.Errors[name]; err != nil && !errors.Is(err, kafka.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		deleted = append(deleted, name)
	}
	return deleted, errors.Join(errs...)
}

// splitConfig checks cfg for the split mode and, for sandbox id's reader,
// points it at the sandbox's topic from its start. It returns the source
// topic.
func splitConfig(cfg *kafka.ReaderConfig, id string) (string, error) {
	if cfg.Topic == "" || len(cfg.GroupTopics) > 0 {
		return "", errors.New("WithSplit: ReaderConfig must name one Topic, not GroupTopics")
	}
	source := cfg.Topic
	// The names of every sandbox's topic share this prefix: checked once
	// here, so that a baseline reader fails at construction rather than on
	// its first forward. A sandbox ID is a DNS label, made of allowed
	// characters; only its length can still make a name too long.
	if err := validTopic(source + "." + SandboxGroup(cfg.GroupID, "")); err != nil {
		return "", fmt.Errorf("WithSplit: topic %q and group %q make no valid sandbox topic name: %w", source, cfg.GroupID, err)
	}
	if id == "" {
		return source, nil
	}
	name, err := SplitTopic(source, cfg.GroupID, id)
	if err != nil {
		return "", fmt.Errorf("WithSplit: %w", err)
	}
	// Everything in the sandbox's topic was forwarded for it: a new group
	// starts at the beginning (what its filter-mode predecessor processed
	// is skipped, see marks).
	cfg.Topic, cfg.StartOffset = name, kafka.FirstOffset
	return source, nil
}
