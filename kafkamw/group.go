package kafkamw

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/routes"
)

// SandboxGroup returns the consumer group of sandbox id's reader for the
// baseline consumer group group: "<group>.sandbox.<id>". A sandbox ID is a
// DNS label, so the result is a valid group name whenever group is, and
// each sandbox's reader has a group of its own, apart from the baseline's.
func SandboxGroup(group, id string) string {
	return group + ".sandbox." + id
}

// seed sets the start offsets of a sandbox reader's group before it joins:
// for every partition on which the group has no committed offset, the first
// offset whose timestamp is at or after the route's activation (the end of
// the partition when there is none yet). The group then neither replays the
// topic's history nor misses what was produced between the activation and
// its start. A group that has committed offsets keeps them.
func (r *Reader) seed(ctx context.Context) error {
	route, err := r.route(ctx)
	if err != nil {
		return err
	}
	tr := transport(r.rcfg.Dialer)
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(r.rcfg.Brokers...), Transport: tr}
	fail := func(step string, err error) error {
		return fmt.Errorf("kafkamw: setting start offsets of group %s: %s: %w", r.group, step, err)
	}

	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: r.topics})
	if err != nil {
		return fail("metadata", err)
	}
	parts := make(map[string][]int, len(r.topics))
	for _, t := range md.Topics {
		if t.Error != nil {
			return fail("metadata of topic "+t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			parts[t.Name] = append(parts[t.Name], p.ID)
		}
	}

	of, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: r.group, Topics: parts})
	if err != nil {
		return fail("committed offsets", err)
	}
	// A group that does not exist yet has no offsets; some brokers say so
	// with an error, Kafka with offset -1.
	if of.Error != nil && !errors.Is(of.Error, kafka.GroupIdNotFound) {
		return fail("committed offsets", of.Error)
	}
	missing := make(map[string][]int)
	for topic, ps := range parts {
		committed := make(map[int]bool)
		for _, p := range of.Topics[topic] {
			if p.Error != nil && !errors.Is(p.Error, kafka.GroupIdNotFound) {
				return fail(fmt.Sprintf("committed offset of %s/%d", topic, p.Partition), p.Error)
			}
			committed[p.Partition] = p.Error == nil && p.CommittedOffset >= 0
		}
		for _, p := range ps {
			if !committed[p] {
				missing[topic] = append(missing[topic], p)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}

	// The end offsets first: a timestamp lookup that finds nothing means
	// every record then present is older than the activation, which
	// includes every record before these ends.
	ends, err := listOffsets(ctx, cl, missing, func(p int) kafka.OffsetRequest { return kafka.LastOffsetOf(p) })
	if err != nil {
		return fail("end offsets", err)
	}
	at, err := listOffsets(ctx, cl, missing, func(p int) kafka.OffsetRequest { return kafka.TimeOffsetOf(p, route.ActiveFrom) })
	if err != nil {
		return fail("offsets at "+route.ActiveFrom.UTC().Format(time.RFC3339Nano), err)
	}
	commits := make(map[string][]kafka.OffsetCommit, len(missing))
	for topic, ps := range missing {
		for _, p := range ps {
			off := ends[topic][p].LastOffset
			for o := range at[topic][p].Offsets {
				if o >= 0 { // -1: no record at or after the time
					off = o
				}
			}
			if off < 0 {
				return fail(fmt.Sprintf("offsets of %s/%d", topic, p), fmt.Errorf("broker returned offset %d", off))
			}
			commits[topic] = append(commits[topic], kafka.OffsetCommit{Partition: p, Offset: off})
		}
	}
	// GenerationID -1 with no member: a commit for a group no member has
	// joined, as admin tools make. Should another instance of this
	// sandbox's reader have joined in the meantime, the broker refuses it
	// and the next FetchMessage finds that group's offsets.
	cr, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: r.group, GenerationID: -1, Topics: commits})
	if err != nil {
		return fail("commit", err)
	}
	for topic, ps := range cr.Topics {
		for _, p := range ps {
			if p.Error != nil {
				return fail(fmt.Sprintf("commit of %s/%d", topic, p.Partition), p.Error)
			}
		}
	}
	return nil
}

// listOffsets asks for one offset per partition and returns the answers by
// topic and partition.
func listOffsets(ctx context.Context, cl *kafka.Client, parts map[string][]int, req func(int) kafka.OffsetRequest) (map[string]map[int]kafka.PartitionOffsets, error) {
	rq := &kafka.ListOffsetsRequest{Topics: make(map[string][]kafka.OffsetRequest, len(parts))}
	for topic, ps := range parts {
		for _, p := range ps {
			rq.Topics[topic] = append(rq.Topics[topic], req(p))
		}
	}
	resp, err := cl.ListOffsets(ctx, rq)
	if err != nil {
		return nil, err
	}
	out := make(map[string]map[int]kafka.PartitionOffsets, len(parts))
	for topic, ps := range resp.Topics {
		out[topic] = make(map[int]kafka.PartitionOffsets, len(ps))
		for _, p := range ps {
			if p.Error != nil {
				return nil, fmt.Errorf("%s/%d: %w", topic, p.Partition, p.Error)
			}
			out[topic][p.Partition] = p
		}
	}
	for topic, ps := range parts {
		for _, p := range ps {
			if _, ok := out[topic][p]; !ok {
				return nil, fmt.Errorf("%s/%d: no answer", topic, p)
			}
		}
	}
	return out, nil
}

// route returns the sandbox's route for the service. A route missing from
// the table is looked up again once the table has synced up to the moment
// of asking ([routes.Table.WaitSynced], bounded by the route wait), so that
// a table that has not loaded yet, or is behind its source, does not
// answer for the source: [ErrRoutesBehind] when it does not catch up,
// [ErrNoRoute] when the source, up to date, has no such route.
func (r *Reader) route(ctx context.Context) (routes.Route, error) {
	t, id, service := r.cfg.table, r.cfg.sandbox, r.cfg.service
	if rt, ok := t.Route(id, service); ok {
		return rt, nil
	}
	asked := time.Now()
	wctx, cancel := context.WithTimeout(ctx, r.cfg.routeWait)
	defer cancel()
	if err := t.WaitSynced(wctx, asked); err != nil {
		if ctx.Err() != nil {
			return routes.Route{}, ctx.Err()
		}
		return routes.Route{}, fmt.Errorf("%w: looking up the route of sandbox %q for service %q, waited %s", ErrRoutesBehind, id, service, r.cfg.routeWait)
	}
	if rt, ok := t.Route(id, service); ok {
		return rt, nil
	}
	return routes.Route{}, fmt.Errorf("%w: sandbox %q, service %q", ErrNoRoute, id, service)
}

// transport returns a kafka-go transport that connects as d does (TLS,
// SASL, client ID, dial function and timeout).
func transport(d *kafka.Dialer) *kafka.Transport {
	tr := &kafka.Transport{}
	if d == nil {
		return tr
	}
	tr.TLS, tr.SASL, tr.ClientID = d.TLS, d.SASLMechanism, d.ClientID
	if d.Timeout > 0 {
		tr.DialTimeout = d.Timeout
	}
	if d.DialFunc != nil {
		tr.Dial = d.DialFunc
	}
	return tr
}
