package routes

import (
	"maps"
	"time"
)

// A snapshot is one immutable state of the table. Sandboxes are spread over
// shards by a hash of their ID, each shard holding its sandboxes and their
// routes, so that an update copies only the shards it changes: applying a
// change costs what changed, not the size of the table.
const shardCount = 256

type snapshot struct {
	shards  [shardCount]*shard // nil: empty; shared between snapshots until changed
	count   int                // sandboxes, expired ones included
	changed chan struct{}      // closed when this snapshot is replaced
}

type shard struct {
	sandboxes map[string]*record
	routes    map[routeKey]*entry // tombstones included
}

// record is a sandbox as the table holds it (ActiveFrom filled in, sharing
// nothing with callers) and as it was given, to tell an unchanged sandbox
// of the next update at a glance.
type record struct {
	sb Sandbox
	in *Sandbox
}

// shardOf spreads IDs over the shards with FNV-1a (inlined: this is on
// the Lookup path), mixed with the table's seed.
func shardOf(seed uint32, id string) int {
	h := seed
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return int((h ^ h>>16) & (shardCount - 1))
}

func (s *snapshot) route(seed uint32, id, service string) *entry {
	sh := s.shards[shardOf(seed, id)]
	if sh == nil {
		return nil
	}
	return sh.routes[routeKey{id, service}]
}

func (s *snapshot) sandbox(seed uint32, id string) *record {
	sh := s.shards[shardOf(seed, id)]
	if sh == nil {
		return nil
	}
	return sh.sandboxes[id]
}

// Update replaces the table's content with sbs. It rejects sbs whole,
// keeping the current content, when an entry is invalid. Routes without
// ActiveFrom keep the activation time they had, or get now; routes that
// disappear become tombstones removed now. Update does not move
// [Table.SyncedAt] of a table that has a source: a change by hand proves
// nothing about the source.
//
// Update costs what changed plus a comparison per sandbox: sandboxes equal
// to the ones the table holds are neither validated again nor copied. To
// change a few sandboxes of a large table without handing over all of
// them, use [Table.Put] and [Table.Remove].
func (t *Table) Update(sbs []Sandbox) error {
	if err := t.update(sbs, nil, t.now()); err != nil {
		return err
	}
	t.setByHand()
	return nil
}

// Put adds sbs to the table, each replacing the sandbox of the same ID if
// there is one, and leaves the other sandboxes as they are. It validates
// sbs first and rejects them all when one is invalid. Like [Table.Update],
// it is a change by hand.
func (t *Table) Put(sbs ...Sandbox) error {
	if err := Validate(sbs); err != nil {
		t.setErr(err)
		return err
	}
	now := t.now()
	t.mu.Lock()
	b := t.newBuilder(now)
	for i := range sbs {
		if rec := b.old.sandbox(t.seed, sbs[i].ID); rec == nil || !sameSandbox(rec.in, &sbs[i]) {
			b.put(&sbs[i], true)
		}
	}
	b.commit(nil)
	t.mu.Unlock()
	t.setByHand()
	return nil
}

// Remove removes the sandboxes ids from the table; their routes become
// tombstones removed now, unless they name their own removedAt. IDs the
// table does not hold are ignored. Like [Table.Update], it is a change by
// hand.
func (t *Table) Remove(ids ...string) {
	now := t.now()
	t.mu.Lock()
	b := t.newBuilder(now)
	for _, id := range ids {
		b.remove(id)
	}
	b.commit(nil)
	t.mu.Unlock()
	t.setByHand()
}

// update applies sbs, or doc's sandboxes when doc is not nil (a document
// of a built-in source: validated, and never modified).
func (t *Table) update(sbs []Sandbox, doc *parsedDoc, now time.Time) error {
	if doc != nil {
		sbs = doc.sbs
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.snap.Load()

	// Find what changed, and validate that only: the rest was validated
	// when it was applied. A document is validated whole already.
	var (
		changed []int
		matched int // sandboxes of sbs that the table holds
		seen    map[string]int
	)
	if doc == nil {
		seen = make(map[string]int, len(sbs))
	}
	for i := range sbs {
		sb := &sbs[i]
		if seen != nil {
			if j, dup := seen[sb.ID]; dup {
				if err := validateSandbox(i, sb); err != nil {
					t.setErr(err)
					return err
				}
				err := errRepeated(i, j, sb.ID)
				t.setErr(err)
				return err
			}
			seen[sb.ID] = i
		}
		rec := old.sandbox(t.seed, sb.ID)
		if rec != nil {
			matched++
			if sameSandbox(rec.in, sb) {
				continue
			}
		}
		if doc == nil {
			if err := validateSandbox(i, sb); err != nil {
				t.setErr(err)
				return err
			}
		}
		changed = append(changed, i)
	}
	t.setErr(nil)

	b := t.newBuilder(now)
	for _, i := range changed {
		b.put(&sbs[i], doc == nil)
	}
	if matched < old.count { // some sandboxes are gone
		if seen == nil {
			seen = make(map[string]int, len(sbs))
			for i := range sbs {
				seen[sbs[i].ID] = i
			}
		}
		for _, sh := range old.shards {
			if sh == nil {
				continue
			}
			for id := range sh.sandboxes {
				if _, ok := seen[id]; !ok {
					b.remove(id)
				}
			}
		}
	}
	b.commit(doc)
	return nil
}

// builder makes the next snapshot from the current one, copying a shard
// the first time it changes it. The caller holds t.mu.
type builder struct {
	t     *Table
	now   time.Time
	old   *snapshot
	next  *snapshot
	owned [shardCount]bool // shards of next that are copies of this builder's
	dirty bool
}

func (t *Table) newBuilder(now time.Time) *builder {
	old := t.snap.Load()
	return &builder{t: t, now: now, old: old, next: &snapshot{shards: old.shards, count: old.count}}
}

// shard returns the shard of id in next, copied for writing.
func (b *builder) shard(id string) *shard {
	i := shardOf(b.t.seed, id)
	if !b.owned[i] {
		sh := &shard{sandboxes: map[string]*record{}, routes: map[routeKey]*entry{}}
		if old := b.next.shards[i]; old != nil {
			sh.sandboxes, sh.routes = maps.Clone(old.sandboxes), maps.Clone(old.routes)
		}
		b.next.shards[i], b.owned[i] = sh, true
	}
	b.dirty = true
	return b.next.shards[i]
}

// put adds or replaces the sandbox given as in; own says to copy in deeply
// (it is the caller's), rather than keep in's maps (a parsed document's,
// which no one modifies).
func (b *builder) put(in *Sandbox, own bool) {
	sh := b.shard(in.ID)
	kept := *in
	if own {
		kept.Services = maps.Clone(in.Services)
		if in.Budget != nil {
			budget := *in.Budget
			kept.Budget = &budget
		}
	}
	sb := kept
	if sb.Budget != nil {
		budget := *sb.Budget
		sb.Budget = &budget
	}
	if kept.Services != nil {
		sb.Services = make(map[string]Route, len(kept.Services))
	}
	for svc, r := range kept.Services {
		k := routeKey{in.ID, svc}
		if r.ActiveFrom.IsZero() {
			// Keep the activation of the route the table holds; a
			// tombstone's route was removed, so this one starts now.
			if prev := sh.routes[k]; prev != nil && !b.isTomb(k) {
				r.ActiveFrom = prev.ActiveFrom
			} else {
				r.ActiveFrom = b.now
			}
		}
		sb.Services[svc] = r
		sh.routes[k] = &entry{Route: r, expires: sb.Expires}
		delete(b.t.tombs, k)
	}
	if prev := sh.sandboxes[in.ID]; prev != nil {
		for svc := range prev.sb.Services {
			if _, ok := kept.Services[svc]; !ok {
				b.bury(sh, routeKey{in.ID, svc})
			}
		}
	} else {
		b.next.count++
	}
	sh.sandboxes[in.ID] = &record{sb: sb, in: &kept}
}

func (b *builder) isTomb(k routeKey) bool {
	_, ok := b.t.tombs[k]
	return ok
}

// remove removes sandbox id; its routes become tombstones.
func (b *builder) remove(id string) {
	if cur := b.next.shards[shardOf(b.t.seed, id)]; cur == nil || cur.sandboxes[id] == nil {
		return // not there: nothing to copy
	}
	sh := b.shard(id)
	rec := sh.sandboxes[id]
	delete(sh.sandboxes, id)
	b.next.count--
	for svc := range rec.sb.Services {
		b.bury(sh, routeKey{id, svc})
	}
}

// bury turns the route k of sh into a tombstone, removed now unless it
// names its own removal, and drops it if that is past the grace period.
func (b *builder) bury(sh *shard, k routeKey) {
	e := sh.routes[k]
	if e == nil {
		return
	}
	tomb := *e
	if tomb.RemovedAt.IsZero() {
		tomb.RemovedAt = b.now
	}
	if b.now.Sub(tomb.RemovedAt) < b.t.grace {
		sh.routes[k] = &tomb
		b.t.tombs[k] = tomb.RemovedAt
	} else {
		delete(sh.routes, k)
		delete(b.t.tombs, k)
	}
}

// commit drops the tombstones past the grace period and, when anything
// changed, publishes the next snapshot and signals the change. doc is what
// the content now comes from.
func (b *builder) commit(doc *parsedDoc) {
	t := b.t
	for k, removed := range t.tombs {
		if b.now.Sub(removed) >= t.grace {
			delete(b.shard(k.id).routes, k)
			delete(t.tombs, k)
		}
	}
	t.applied.Store(doc)
	if !b.dirty {
		return
	}
	b.next.changed = make(chan struct{})
	t.snap.Store(b.next)
	close(b.old.changed)
}

// sameSandbox reports whether a and b describe the same sandbox, times
// compared as instants.
func sameSandbox(a, b *Sandbox) bool {
	if a.ID != b.ID || a.Actor != b.Actor || a.Origin != b.Origin || a.Database != b.Database || !a.Expires.Equal(b.Expires) ||
		(a.Budget == nil) != (b.Budget == nil) || a.Budget != nil && *a.Budget != *b.Budget || len(a.Services) != len(b.Services) {
		return false
	}
	for svc, ra := range a.Services {
		rb, ok := b.Services[svc]
		if !ok || ra.Upstream != rb.Upstream || !ra.ActiveFrom.Equal(rb.ActiveFrom) || !ra.RemovedAt.Equal(rb.RemovedAt) {
			return false
		}
	}
	return true
}

// cloneSandboxes copies sbs deeply enough that later changes the caller makes
// to its maps and budgets do not reach the table.
func cloneSandboxes(sbs []Sandbox) []Sandbox {
	out := make([]Sandbox, len(sbs))
	for i, sb := range sbs {
		out[i] = sb
		out[i].Services = maps.Clone(sb.Services)
		if sb.Budget != nil {
			budget := *sb.Budget
			out[i].Budget = &budget
		}
	}
	return out
}
