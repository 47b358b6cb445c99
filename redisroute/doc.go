// Package redisroute keeps a sandbox's Redis data in the sandbox: with a
// sandbox in the context, commands sent through a go-redis
// (github.com/redis/go-redis/v9) client never read or write production
// keys, and production never sees the sandbox's keys.
package redisroute
