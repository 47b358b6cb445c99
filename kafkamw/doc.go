// Package kafkamw carries sandboxes over Kafka with
// github.com/segmentio/kafka-go: a [Writer] that tags the messages it writes
// with the context's sandbox, and a [Reader] that returns each message with a
// context carrying its sandbox and decides, without talking to any other
// consumer, whether the message is its own.
//
// # Record headers
//
// The sandbox travels in record headers under the same keys as on HTTP and
// gRPC, written and read by one [propagation.Codec] ([WithCodec]): the
// dedicated header (sandbox-id by default) and the sandbox's members in a
// W3C baggage header. Header keys are matched case-insensitively and
// written lower-case. [Writer.WriteMessages] never changes the caller's
// slice or messages: with a sandbox in the context it writes copies, keeping
// every header the caller set; without one it writes the messages as they
// are, without copying or allocating.
//
// # Baseline and sandbox readers
//
// A service that consumes a topic runs one baseline reader in its consumer
// group (ReaderConfig.GroupID); a sandbox that overrides the service runs a
// sandbox reader ([AsSandbox]) in a group of its own, [SandboxGroup]
// ("<group>.sandbox.<id>"). Both read every message of the topic, and for
// every message at most one of them processes it:
//
//   - an untagged message, or a message of a sandbox that exists but does
//     not override the service (named to [NewReader]) at the message's time,
//     belongs to the baseline reader, which returns it with the sandbox in
//     the context so that its writes still reach the sandbox's test
//     database;
//   - a message of a sandbox that overrides the service at the message's
//     time belongs to that sandbox's reader;
//   - a message of a sandbox the table does not know at the message's time
//     (it never existed, had expired, or was removed) belongs to no one:
//     see "Orphaned messages".
//
// "Overrides at the message's time" is [routes.Table.ActiveAt] with the
// message's timestamp: the route's activation and removal times come from
// the route document, so both readers reach the same answer even when they
// load an update at different moments. A reader whose table has not synced
// up to a tagged message's timestamp ([routes.Table.SyncedAt]) waits for it
// ([routes.Table.WaitSynced]), up to [WithRouteWait], and then returns
// [ErrRoutesBehind] rather than guess; it keeps the message and decides it
// again on the next FetchMessage. A table that has never loaded from its
// source is synced up to nothing, so no tagged message is decided before
// its first load, not even after a restart over a backlog. Untagged
// messages, whose owner does not depend on the table, flow meanwhile up
// to the first undecided tagged message of their partition; those behind
// it wait with it, because a partition is committed in order: a route
// source that is down from a reader's start holds every partition that
// carries a tagged message (FetchMessage and [Reader.Run]'s OnError
// report ErrRoutesBehind, "synced up to never"). A table filled by hand
// ([routes.NewStatic]) is its own source and never waits.
//
// For the two sides to agree, give routes explicit activeFrom and removedAt
// times in the route document, no earlier than the moment the document is
// published (a table that synced before publication must not have decided
// messages that the new document gives to someone else), and keep producer
// clocks in step with the route source: the decision uses the message's
// timestamp (CreateTime, which kafka-go's Writer sets when Message.Time is
// zero). A route without activeFrom is worse: each [routes.Table] stamps
// it with its own clock when it loads the document, so two readers that
// load it at different moments hold different windows, and a message
// produced between the two loads is skipped by both (lost) or processed
// by both, depending on which loaded first (TestImplicitActivationGap,
// run with SANDBOXKIT_KNOWN_GAPS=1). Neither rule is enforced here: a document that activates a route
// earlier than its own publication gives the sandbox's reader messages
// that the baseline reader has already processed (two owners), and only
// the route source can prevent it (cmd/sandboxctl stamps activation
// windows from one clock).
//
// # Split mode
//
// In the filter mode described so far every sandbox reader reads the
// whole topic. [WithSplit], given to both readers (off by default), keeps
// the broker's read cost flat in the number of sandboxes: the baseline
// reader, which reads every message anyway, forwards each message a
// sandbox's reader owns to that sandbox's topic, and the sandbox's reader
// reads that topic only. Which messages those are is the same decision
// as in the filter mode ([routes.Table.ActiveAt] at the message's time):
// only where a sandbox's messages are read from changes.
//
//   - The sandbox's topic is [SplitTopic]: "<topic>.<group>.sandbox.<id>"
//     (the baseline group's, so that two services consuming one topic
//     never share one). It is created on demand, by the baseline's first
//     forward or the sandbox reader's start, with the source topic's
//     partition count or [Split].Partitions. A name Kafka would refuse
//     (over 249 characters) is an [ErrConfig] error from [NewReader] for
//     the sandbox's reader, and the baseline reader, which no sandbox
//     reader can then relieve, skips such a sandbox's messages as
//     Counts.Unforwardable: dead-lettered when a dead-letter writer is
//     set, audited as rejected, never processed by the baseline.
//   - A copy keeps the key, value, headers and timestamp, adds
//     [HeaderSplitTopic] (its source topic, when the topic's or group's
//     name has a dot) and [HeaderSplitSource] (its source partition and
//     offset), and goes to
//     the source partition's number modulo the partition count: the
//     copies of one partition, so of one key, keep their order. Two
//     sources may share a sandbox topic ([SplitTopic] of topic "t" and
//     group "b.c" is that of topic "t.b" and group "c"): a sandbox reader
//     skips the copies of another source topic (Counts.Duplicates). Such
//     names share their [ReapSplitTopics] too: give the groups of
//     topics whose names extend each other names without dots.
//   - Copies are buffered and written, acknowledged by all in-sync
//     replicas, 10ms after the first of them is buffered but no sooner
//     than 50ms after the previous such write (with those buffered
//     meanwhile: one produce request per partition leader), every
//     [WithSkipCommitInterval] (one second by default), on Close, and
//     whenever 4000 are waiting. Each write wakes a fetch of every
//     sandbox partition it reaches: on a busy topic those fetches cost
//     more than the copies, and the 50ms bound their rate. No offset
//     is committed past a message whose copy is not acknowledged: a
//     commit (the caller's CommitMessages, [Reader.Run]'s) that would
//     pass one commits up to it, and what it asked for beyond is
//     committed once the copy is written. A copy therefore reaches the
//     sandbox's topic within 10ms (50ms on a busy topic), and the
//     baseline group's committed offset the caller's commits within one
//     skip-commit interval. A write that
//     fails is retried on the next tick, holding the commits back
//     meanwhile; a write that some partitions acknowledged writes again
//     only the copies of the others (only a request that got no answer
//     at all, which the broker may have written nonetheless, can leave
//     copies twice; see below for duplicates). An answer that does not
//     name each partition of its request exactly once counts as no
//     answer. A topic that cannot be
//     created keeps the message ([ErrForward]) and holds its partition
//     until the broker accepts it; a sandbox topic deleted under the
//     baseline (by an operator, or a reaper) is created again on the next
//     write. A message that already carries a [HeaderSplitSource] (a
//     service produced it from a forwarded copy) loses it in its copy.
//     A partition's copies go in record sets of at most 900 KiB, below
//     the brokers' default max.message.bytes.
//   - A sandbox topic the forwarder creates (or the sandbox's reader, see
//     below) gets the source topic's max.message.bytes plus 1 KiB for the
//     header a copy adds, read with DescribeConfigs: a source topic that
//     accepts larger messages than the broker's default gets a sandbox
//     topic that accepts their copies. When the source's cannot be read
//     the topic is created with the broker's default all the same. A
//     sandbox topic that exists already (an older baseline created it,
//     or the source's limit was raised since) and accepts less has its
//     max.message.bytes raised to that (IncrementalAlterConfigs) when the
//     forwarder first meets it, and again when the topic refuses a copy
//     as too large (its limit was lowered since: the copy is kept and
//     written after the raise, once; refused again, it is given up); a
//     higher one is never lowered, and only
//     names made by [SplitTopic] are touched: that name is the split
//     mode's, a topic an operator made by hand under it is taken for
//     one (as [ReapSplitTopics] takes it). A copy the sandbox topic
//     still refuses as too large (the describe or the raise was refused,
//     or the source batch was compressed and the copy, written
//     uncompressed, is larger)
//     must not hold its source partition, production's messages
//     included, for ever: a record set of several copies refused as too
//     large is written again one copy per set, and a copy refused alone
//     is given up as Counts.Unforwardable (dead-lettered when a
//     dead-letter writer is set, audited as rejected with the broker's
//     refusal, never processed by the baseline) and committed past.
//     Its sandbox's reader never sees it. The dead-letter writer's
//     BatchBytes (kafka-go's default is 1 MiB) and its topic's limit
//     decide whether the dead letter of such a message can be written: a
//     failed one is counted in Counts.DeadLetterFailed, and the audit
//     record names the message's coordinates in the source topic.
//   - A sandbox reader in the split mode reads its topic from the
//     beginning (a new group) and decides each copy as in the filter
//     mode: messages forwarded before it started wait for it.
//
// A baseline reader that crashes after a forward and before its commit
// leaves copies whose originals its successor forwards again: the
// sandbox's topic then holds duplicates. A sandbox reader skips a copy of
// a source message it has already decided (Counts.Duplicates), as long as
// it does not restart between the two copies; one that does processes
// the message again, which at-least-once delivery allows (see
// "Delivery"). Nothing is lost (TestSplitCrashBetweenForwardAndCommit).
// A copy is known by its source partition and offset only: a source topic
// deleted and created again under a running split-mode sandbox reader
// restarts its offsets below what that reader has decided, and the reader
// would skip the new messages as second copies. Restart the sandbox
// readers after recreating a source topic (their marks start afresh).
//
// [ReapSplitTopics] deletes the sandbox topics of one topic and group
// whose sandbox is no longer in the route table; it touches only names
// made by [SplitTopic] for that topic and group, and refuses a table that
// has never loaded. Call it from sandbox teardown or periodically.
//
// Switching modes in a rolling deploy (TestSplitModeSwitch):
//
//   - filter to split: first every baseline instance, then the sandbox
//     readers. While the sandbox's reader is still in the filter mode it
//     processes its messages from the source topic and the copies wait
//     unread; its split-mode successor skips the copies of what its group
//     committed on the source topic, and processes each message once,
//     provided the filter-mode reader has stopped before it starts (an
//     overlap can duplicate, never lose).
//   - split to filter: first the sandbox readers, then the baseline
//     instances. The filter-mode reader resumes from its group's commits
//     on the source topic (or the route's activation) and processes again
//     what its split-mode predecessor processed: duplicates, no loss.
//   - never a split-mode sandbox reader while a filter-mode baseline
//     reader holds a partition: that baseline reader forwards nothing,
//     and the sandbox's messages on its partitions are processed by no
//     one (they stay in the source topic, committed past).
//
// The cost ("Limits" has the filter mode's): the broker serves the topic
// once plus each sandbox's share (BenchmarkSandboxes: 1.33 messages
// fetched per message produced, for 1, 4 or 16 sandboxes owning a third
// of the topic, against 2, 5 and 17 in the filter mode), and each
// forwarded message is written once more, in one produce request per
// partition leader at most every 50ms (or per 4000 copies), however
// often the caller commits, and read once more by its sandbox's reader.
// The README has the CPU figures.
//
// # Skipped messages
//
// Messages a reader does not own are skipped: counted ([Reader.Counts]),
// audited when they concern its own sandbox (the baseline reader audits
// every orphan), and committed, so that its
// group's lag does not grow. Because a group commits one offset per
// partition, a skipped offset is committed only once every message returned
// before it on its partition has been committed: together with the caller's
// next [Reader.CommitMessages] on that partition, or by the reader itself
// every [WithSkipCommitInterval] and on [Reader.Close].
//
// # Orphaned messages
//
// A message of a sandbox that the route table does not know at the
// message's time belongs to no reader: processing it could only fail (the
// sandbox has no test database any more) or, worse, hold its partition.
// The baseline reader skips it, commits past it, writes it to the
// dead-letter writer when one is set ([WithDeadLetter]) with the reason in
// [HeaderDeadLetterReason], and audits it (decision rejected, with the
// reason); a sandbox reader skips the orphans of its own sandbox. Both
// count them in Counts.Orphaned. See "Dead letters" for a dead-letter
// writer that fails. The decision reads the route table only,
// so every reader, and a reader restarted later, reaches the same one.
//
// The table remembers a removed sandbox only through its routes'
// tombstones ([routes.WithTombstoneGrace]): a message of a sandbox that
// did not override the service and is gone when the message is decided is
// orphaned even if it was produced before the removal.
//
// # The consume loop
//
// [Reader.Run] calls a [Handler] for each message the reader owns and
// commits it once handled: what most consumers want, without a way to
// wedge a partition on test traffic. A failing message is retried with
// backoff ([WithRetries], [WithBackoff]). A sandbox message whose handler
// keeps failing, or fails with a sandbox error ([WithSandboxErrors]: by
// default the breaker's refusals; add dbroute.ErrNoTestDatabase and
// dbroute.ErrSandboxOnBaseline when the handler writes through dbroute)
// is dead-lettered with the error and committed past, so production behind
// it flows on; after three of one sandbox in a row, that sandbox's next
// messages are tried once each until one succeeds. A handler that panics
// on a sandbox message is recovered ([ErrHandlerPanic]) and the message
// given up on at once: a bug only test traffic reaches must not crash the
// consumer onto the same message again and again. A production handler's
// panic is not recovered; the message is kept, so that neither a restarted
// consumer nor the same reader run again goes past it. A failing
// production message follows [OnProductionFailure]:
// [RetryForever] (the default: nothing is dropped), [DeadLetterAndContinue]
// or [StopRun]. Cancelling Run's context is a clean shutdown: what was
// processed is committed, a message being handled when the context ended
// is not.
//
// # Delivery
//
// Each message has at most one owner, and every message no one owns is
// accounted for (counted, audited, dead-lettered). Delivery to the owner is
// at-least-once, as Kafka gives: after a crash, a rebalance or a broker
// outage, messages processed since the last commit are delivered again, to
// the same owner. A handler must therefore be idempotent: key its writes
// on something in the message (an order ID, the topic/partition/offset)
// and make a repeat a no-op (INSERT ... ON CONFLICT DO NOTHING, an upsert,
// a processed-messages table written in the same transaction).
//
// # Metrics
//
// Each reader reports its counts as the OpenTelemetry counter
// [MetricMessages], by outcome and consumer group, through the meter
// provider of [WithMeterProvider] (the global one by default). The counter
// is asynchronous: it reads [Reader.Counts] when collected and costs
// nothing per message.
//
// # Sandbox start offsets
//
// A new sandbox group must start where the sandbox's route became active:
// starting at the end of the topic would lose the messages produced between
// activation and the reader's start, starting at the beginning would replay
// the topic's history. On its first FetchMessage a sandbox reader therefore
// looks up, for each partition on which its group has no committed offset,
// the first offset at or after the route's activeFrom (ListOffsets by
// timestamp) and commits it for the group before joining. A group that has
// committed offsets (a restarted reader) resumes from them.
//
// # Unreadable headers
//
// A message whose sandbox headers cannot be read (malformed, invalid,
// conflicting; a header named as one of our baggage keys alone, or in
// OpenTracing's form with a key that is ours only once decoded, as
// ot-baggage-sandbox%2eid, which an ottrace propagator on the consumer
// would read into baggage) is never returned, not even to the baseline
// reader as production traffic. The baseline reader, which owns it, records a
// rejected audit event, writes it to the dead-letter writer when one is set
// ([WithDeadLetter]) and skips it; a sandbox reader skips it. Both count it
// in Counts.Unreadable. Producers inside the cluster are trusted: Kafka
// markers need no ticket.
//
// # Dead letters
//
// A message no reader processes (unreadable, orphaned, or a sandbox
// message [Reader.Run] gave up on) never waits for the dead-letter writer:
// when the write fails or times out (after 10s), the message is skipped or
// committed past all the same, counted in Counts.DeadLetterFailed, and its
// audit record names the error and the message's topic/partition/offset,
// where it can still be read until the topic's retention removes it. After
// a failed write the writer is not tried again for five seconds, twice as
// long after each further failure in a row (up to two minutes), until a
// write succeeds, so that a dead-letter topic that hangs costs production
// one bounded write per pause rather than one per message; messages met
// meanwhile are accounted for the same way. A refusal of one message for its size (over the writer's
// BatchBytes or the dead-letter topic's max.message.bytes) does not pause
// the writer: the next message is written as usual. Only a production message under [DeadLetterAndContinue] waits for
// its dead-letter write, retried until it succeeds: production data is
// never committed past unrecorded.
//
// A write counts only once the broker has acknowledged it: [NewReader]
// refuses a dead-letter writer that is Async or whose RequiredAcks is
// kafka-go's default, RequireNone, whose writes report success for a copy
// the broker refused (one over the dead-letter topic's max.message.bytes),
// which was then counted dead-lettered, committed past and kept nowhere.
//
// Dead-letter writes are synchronous, one per message, in front of the
// messages behind it: a flood of orphans costs production one
// acknowledged write each. On the embedded broker, with a writer whose
// BatchTimeout is 2ms, that is about 2.4ms per orphan against about 2µs
// to skip one without a dead-letter writer (BenchmarkOrphanFlood): 100,000
// orphans would hold the production message behind them for about four
// minutes. Where floods are possible, leave the dead-letter writer off
// the baseline reader's orphans and rely on the audit records and
// Counts.Orphaned.
//
// # Budgets
//
// [WithBreaker] gives each sandbox's writes the budget of a breaker.Group:
// a runaway sandbox's producer is throttled and circuit-broken on its own,
// before its messages reach the broker, and baseline writes are not slowed.
//
// # Audit
//
// With [WithLogger], every decision about a tagged message is one audit
// record, in the schema of package [github.com/sandboxkit/sandboxkit/audit]
// (protocol kafka, peer the consumer group, target the topic): the baseline
// reader records fallback for the messages it processes (reason
// [github.com/sandboxkit/sandboxkit/audit.ReasonNotOverridden]) and skipped
// for those it leaves to a sandbox reader; a sandbox reader records routed
// for its messages and skipped for those of its sandbox it leaves to the
// baseline. The baseline reader records unreadable and orphaned messages
// as rejected (a sandbox reader its own orphans as skipped), [Reader.Run]
// the messages it gives up on as rejected, and a [Writer] a write refused
// by its budget as throttled. The sandbox ID is set on the span in the context passed to
// FetchMessage, if it is recording.
//
// # Cost
//
// An untagged message costs no allocation in this package, on either side.
// The reader remembers what it read from the sandbox headers it has seen
// lately (a hashed memo of 128 entries: the interleaved messages of up to
// about two dozen sandboxes on one topic are parsed once per sandbox in
// about 39 processes of 40, whose seed spreads them over its 32 sets of
// four; in the others a set draws five or more, whose messages are
// parsed again as they take turns;
// marker headers over 8 KiB, unreadable whatever they hold, are parsed
// each time rather than kept), and
// what the route table says of the last sandbox until the table changes,
// so a tagged message of a sandbox seen recently costs no allocation when
// skipped, and none when returned with the same caller context as the
// previous one returned and a sandbox among the last four it returned
// (they share one context; otherwise one, its context). Writing with
// a sandbox costs one allocation per write, a single message or a batch:
// the header lists of the copies. The copy of a single message stays on the
// stack, and the slice of copies of a batch of up to 4096 messages is
// reused. Merging into a baggage header the caller set costs one
// allocation more per message, except for a single message with at most
// two headers whose merged baggage value fits in 128 bytes; a message the
// caller already tagged costs a few more (its headers are read). The
// sandbox's encoded headers are cached.
//
// # Limits
//
// In the filter mode every sandbox reader, like the baseline reader, reads
// the whole topic: with N sandboxes overriding a service, the broker
// serves the topic N+1 times (BenchmarkSandboxes measures it; see "Split
// mode" for the alternative). A route has one activation
// window: if a removed route is activated again
// before a lagging reader has decided the messages of the old window, those
// messages are decided by the new window (the baseline's). A reader that
// lags by more than the route table's tombstone grace cannot tell who owned
// a removed route's messages either ([routes.WithTombstoneGrace]). After a
// group rebalance, a skipped offset of a partition the reader no longer
// owns (or, in the split mode, a commit held back for a copy) may still be
// committed, moving that partition's offset back until its
// new owner commits again (a further rebalance in between redelivers
// messages; none is lost), as kafka-go may do with the caller's own late
// commits.
//
// # Options
//
// Each constructor takes the options of its role: [NewReader] those of
// type [ReaderOption], [NewWriter] those of type [WriterOption], and the
// options both use ([WithCodec], [WithLogger]) are of type [Option], which
// is both. An option
// given to a constructor that cannot use it does not compile. What a reader
// cannot work without, its route table and service, are arguments. A
// misconfiguration (a nil route table, an empty service, an invalid sandbox
// ID, a nil codec or kafka.Writer, two different codecs or sandboxes) is an
// error from the constructor wrapping [ErrConfig] and naming the option at
// fault; nil options are skipped, and a nil breaker group or dead-letter
// writer adds nothing, as leaving the option out does.
//
// # Concurrency
//
// [Writer] and [Reader] are safe for concurrent use. Their zero values are
// not usable: build them with [NewWriter] and [NewReader].
package kafkamw
