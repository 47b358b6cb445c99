package kafkamw

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// The sandbox topics of the split mode: created on demand with the
// source topic's partition count and message size limit, and recreated
// when deleted under a running reader.

// ensure creates the sandbox topic name of key, unless this forwarder has
// created or found it before.
func (f *forwarder) ensure(ctx context.Context, key sandboxTopic, name string) error {
	f.adminMu.Lock()
	defer f.adminMu.Unlock()
	f.mu.Lock()
	_, ok := f.names[key]
	f.mu.Unlock()
	if ok {
		return nil
	}
	n := f.split.Partitions
	if n == 0 {
		var err error
		if n, err = f.partitions(ctx, key.source); err != nil {
			return err
		}
	}
	if err := createTopic(ctx, f.client, name, n, f.split.ReplicationFactor, sandboxTopicConfig(ctx, f.client, key.source)); err != nil {
		return err
	}
	f.mu.Lock()
	f.names[key] = name
	f.mu.Unlock()
	return nil
}

// recreate creates again the sandbox topic name, which this forwarder
// created (or found) before and which is gone.
func (f *forwarder) recreate(ctx context.Context, name string) error {
	f.adminMu.Lock()
	defer f.adminMu.Unlock()
	f.mu.Lock()
	var key sandboxTopic
	found := false
	for k, n := range f.names {
		if n == name {
			key, found = k, true
			break
		}
	}
	f.mu.Unlock()
	if found {
		parts := f.split.Partitions
		if parts == 0 {
			var err error
			if parts, err = f.partitions(ctx, key.source); err != nil {
				return err
			}
		}
		return createTopic(ctx, f.client, name, parts, f.split.ReplicationFactor, sandboxTopicConfig(ctx, f.client, key.source))
	}
	return fmt.Errorf("metadata of %s: %w", name, kafka.UnknownTopicOrPartition)
}

// partitions returns the partition count of topic, cached. f.adminMu is
// held.
func (f *forwarder) partitions(ctx context.Context, topic string) (int, error) {
	if n, ok := f.parts[topic]; ok {
		return n, nil
	}
	n, err := partitionCount(ctx, f.client, topic)
	if err != nil {
		return 0, err
	}
	f.parts[topic] = n
	return n, nil
}

// partitionCount asks the broker for topic's partition count.
func partitionCount(ctx context.Context, cl *kafka.Client, topic string) (int, error) {
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		if len(md.Topics) == 1 {
			return 0, fmt.Errorf("metadata of %s: %w", topic, md.Topics[0].Error)
		}
		return 0, fmt.Errorf("metadata of %s: no answer", topic)
	}
	return len(md.Topics[0].Partitions), nil
}

// createTopic creates topic, a sandbox topic ([SplitTopic]), with n
// partitions and the topic configuration configs. One that exists
// already is fine (another baseline instance, or the sandbox's reader,
// created it), whatever its partitions; its max.message.bytes is raised
// to configs' when lower ([raiseMaxMessageBytes]).
func createTopic(ctx context.Context, cl *kafka.Client, topic string, n, replication int, configs []kafka.ConfigEntry) error {
	if replication == 0 {
		replication = -1 // the broker's default
	}
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: n, ReplicationFactor: replication, ConfigEntries: configs,
	}}})
	if err != nil {
		return err
	}
	err = resp.Errors[topic]
	if errors.Is(err, kafka.TopicAlreadyExists) {
		for _, c := range configs {
			if c.ConfigName == maxMessageBytes {
				raiseMaxMessageBytes(ctx, cl, topic, c.ConfigValue)
			}
		}
		return nil
	}
	return err
}

// raise raises the max.message.bytes of name, a sandbox topic of source
// that this forwarder created or found (so a name made by [SplitTopic]),
// to what sandboxTopicConfig asks when it is lower, and reports whether
// it did: a copy the topic refused as too large fits now.
func (f *forwarder) raise(ctx context.Context, name, source string) bool {
	f.adminMu.Lock()
	defer f.adminMu.Unlock()
	f.mu.Lock()
	ours := false
	for key, n := range f.names {
		ours = ours || n == name && key.source == source
	}
	f.mu.Unlock()
	if !ours {
		return false
	}
	for _, c := range sandboxTopicConfig(ctx, f.client, source) {
		if c.ConfigName == maxMessageBytes {
			return raiseMaxMessageBytes(ctx, f.client, name, c.ConfigValue)
		}
	}
	return false
}

// raiseMaxMessageBytes sets the max.message.bytes of topic, a sandbox
// topic that exists already, to want when its own is lower: created by
// an older baseline reader, or before the source's limit was raised, it
// would refuse the copies of the source's largest messages. Only
// createTopic calls it, with a name made by [SplitTopic]: topics of the
// split mode, never another. It never lowers a limit. A failure (the
// describe or the alter refused, say by an ACL) leaves the topic as it
// is: a copy it refuses as too large is given up ([forwarder.flush]),
// as when the source's limit cannot be read. It reports whether the
// broker accepted a raise.
func raiseMaxMessageBytes(ctx context.Context, cl *kafka.Client, topic, want string) bool {
	w, err := strconv.ParseInt(want, 10, 32)
	if err != nil {
		return false
	}
	resp, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{maxMessageBytes},
	}}})
	if err != nil {
		return false
	}
	for _, res := range resp.Resources {
		if res.ResourceName != topic || res.Error != nil {
			return false
		}
		for _, e := range res.ConfigEntries {
			if e.ConfigName != maxMessageBytes {
				continue
			}
			if have, err := strconv.ParseInt(e.ConfigValue, 10, 32); err != nil || have >= w {
				return false
			}
			resp, err := cl.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{{
				ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
				Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: maxMessageBytes, Value: want, ConfigOperation: kafka.ConfigOperationSet}},
			}}})
			if err != nil || len(resp.Resources) == 0 {
				return false
			}
			for _, r := range resp.Resources {
				if r.Error != nil {
					return false
				}
			}
			return true
		}
	}
	return false
}

// maxMessageBytes is the topic configuration that bounds a record set,
// so the largest message, a topic accepts.
const maxMessageBytes = "max.message.bytes"

// copyHeadroom is what a copy may take in a record set beyond its source
// message alone in one: the [HeaderSplitSource] header and the lengths
// around it.
const copyHeadroom = 1 << 10

// sandboxTopicConfig returns the configuration of a sandbox topic of
// source: max.message.bytes at the source's plus copyHeadroom, so that
// the copy of every message the source accepted fits (a source topic may
// accept larger messages than the broker's default, which a topic
// created without it would get). nil when the source's cannot be read
// (the describe is refused, or times out): the topic is then created
// with the broker's default, and a copy it refuses as too large is given
// up ([forwarder.flush]) rather than the forward failing.
func sandboxTopicConfig(ctx context.Context, cl *kafka.Client, source string) []kafka.ConfigEntry {
	// Half the creation's time at most: the creation still has the rest.
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Until(dl)/2)
		defer cancel()
	}
	resp, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: source, ConfigNames: []string{maxMessageBytes},
	}}})
	if err != nil {
		return nil
	}
	for _, res := range resp.Resources {
		if res.ResourceName != source || res.Error != nil {
			continue
		}
		for _, e := range res.ConfigEntries {
			if e.ConfigName != maxMessageBytes {
				continue
			}
			n, err := strconv.ParseInt(e.ConfigValue, 10, 32)
			if err != nil || n <= 0 {
				return nil
			}
			n = min(n+copyHeadroom, math.MaxInt32)
			return []kafka.ConfigEntry{{ConfigName: maxMessageBytes, ConfigValue: strconv.FormatInt(n, 10)}}
		}
	}
	return nil
}
