// Package orders is the shop's order service: an HTTP endpoint, POST
// /orders, that stores an order in PostgreSQL, books it in a ledger in
// MariaDB (database/sql), caches its price in Redis and publishes an
// order-placed event to Kafka.
//
// It is written as any service would be, with four substitutions that
// make it sandbox-aware:
//
//   - queries go through a [dbroute.Router] instead of the *pgxpool.Pool:
//     a request of a sandbox writes to the sandbox's test database, or
//     fails with 503 when there is none, and never reaches production data;
//   - the ledger goes through a *sqlroute.Router instead of the *sql.DB
//     ([Stores].Ledger): the same for a database reached through
//     database/sql;
//   - the price cache's *redis.Client is routed by redisroute.New
//     ([Stores].Prices): a sandbox's commands run in the sandbox's own
//     Redis database;
//   - events go through a [kafkamw.Writer] instead of the *kafka.Writer:
//     an event published for a sandbox request carries the sandbox in its
//     record headers, so that the sandbox's own consumer gets it.
//
// [NewHandler] wraps the endpoint in [httpmw.NewHandler]; orders is an
// internal hop, so the demo trusts every peer ([httpmw.TrustAll]) and an
// unreadable sandbox marker is answered with 400 before the endpoint runs.
//
// # Schema
//
// [Schema] creates the orders table; the demo applies it to the production
// database and, through the sandbox template, to every test database.
// [LedgerSchema] creates the ledger table in MariaDB, likewise. The cached
// price of an item is a hash at [PriceKey].
//
// The handler and [Client] are safe for concurrent use.
package orders
