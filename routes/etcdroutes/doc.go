// Package etcdroutes keeps a [routes.Table] in sync with sandboxes stored
// in etcd v3, one key per sandbox under a prefix: the key is the prefix
// followed by the sandbox ID, the value the sandbox's JSON object as it
// appears in a route document's "sandboxes" list ([Marshal] writes it,
// [Unmarshal] reads it as strictly as [routes.ParseDocument]).
//
// It is a module of its own (github.com/sandboxkit/sandboxkit/routes/etcdroutes)
// so that only those who use etcd download etcd's client, and nobody
// downloads etcd's server: the tests that run one live in yet another
// module, etcdtest.
//
//	src, err := etcdroutes.New(cli, "/sandboxkit/routes/") // cli: a *clientv3.Client
//	if err != nil {
//		return err // a prefix without the final slash, a nil client
//	}
//	table := routes.New()
//	go src.Sync(ctx, table) // table.Err() says since when etcd fails; the content stays
//
// # How the table follows the store
//
// [Source.Sync] reads every key under the prefix, applies them as one load
// ([routes.Table.Load]), and watches the prefix from the revision of that
// read: each event changes only the sandbox of its key
// ([routes.Table.Put], [routes.Table.Remove]), so a change costs what it
// changed, not the size of the table. When etcd has compacted the
// revisions the watch needs, Sync reads the prefix afresh and watches
// from there. When the watch fails it starts over after a backoff,
// doubling up to [MaxBackoff]; the table keeps its last good content all
// the while and [routes.Table.Err] says why, since when, and when the
// store last proved itself.
//
// # Synced means synced
//
// [routes.Table.SyncedAt] moves only on proof. The initial read proves the
// store up to the moment it was sent. After that, every [ProgressEvery]
// Sync notes the time t, reads the store's current revision r with a
// linearizable request (so r holds every write that completed before t,
// whatever member answers), and asks the watch for a progress
// notification. Once the watch has delivered everything up to r, by events
// or by that notification, the table reflects the store as of t, and Sync
// records it ([routes.Table.MarkSynced]). A store that does not answer the
// read within [Timeout], or a watch that does not catch up to r within it,
// is a failure ([routes.Table.MarkFailed]); a hung server is one.
//
// A progress notification proves this only on an etcd that sends it after
// the events it covers: 3.4.38, 3.5.22, 3.6.2 and later (etcd issues 15220
// and 20221; [ProgressNotifyTrusted]). Each session asks every endpoint of
// the client for its version, and until all have answered with such a
// version (for good where one is older) Sync proves by reading instead
// ([ProveByReading]): at the current revision, the number of keys under
// the prefix and the keys changed since the watch's revision, a pass over
// the prefix per proof.
//
// A store whose revision goes back, or whose cluster ID changes (etcd
// restored from a backup or started over empty), is not the one the watch
// follows: Sync reports it and reads afresh at once. Restore etcd with
// `etcdutl snapshot restore --bump-revision --mark-compacted` all the
// same, so that a watch resuming on it gets a compaction, not the restored
// store's later changes as if they followed its own.
//
// A value that is not a valid sandbox (or names another ID than its key)
// is a failing source too: the table keeps that sandbox as it was, Err
// names the key, and SyncedAt stays where it is until the key is fixed or
// deleted, because the table does not reflect the store meanwhile. On the
// initial read such a key fails the whole read, as an invalid entry
// rejects a whole route document.
//
// # Concurrency
//
// A [Source] is safe for concurrent use; one Source (and one etcd client)
// may keep many tables in sync at once, each with its own Sync call.
package etcdroutes
