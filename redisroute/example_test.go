package redisroute_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/redisroute"
)

// The orders service caches prices in Redis database 1. Sandboxes get
// databases 2 to 15: the same code, the same client, the sandbox's own
// keys.
func ExampleNew() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", DB: 1})
	defer client.Close()
	router, err := redisroute.New(client, redisroute.Databases{First: 2, Last: 15})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer router.Close()

	ctx := context.Background()
	sandbox := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "rrt-example", Actor: "alice"})
	if err := client.Ping(ctx).Err(); err != nil {
		fmt.Println("no Redis")
		return
	}
	defer router.Destroy(ctx, "rrt-example") // flushes the sandbox's database

	client.Set(ctx, "rrt:example:price", "10", 0)
	client.Set(sandbox, "rrt:example:price", "99", 0) // a sandbox's experiment
	fmt.Println("production:", client.Get(ctx, "rrt:example:price").Val())
	fmt.Println("sandbox:", client.Get(sandbox, "rrt:example:price").Val())

	err = client.Publish(sandbox, "price-changes", "99").Err()
	fmt.Println("sandbox publish refused:", errors.Is(err, redisroute.ErrRefused))
	client.Del(ctx, "rrt:example:price")
	// Output:
	// production: 10
	// sandbox: 99
	// sandbox publish refused: true
}

// A client of a server that sandbox traffic must never reach.
func ExampleGuard() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", DB: 1})
	defer client.Close()
	if err := redisroute.Guard(client); err != nil {
		fmt.Println(err)
		return
	}
	sandbox := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "rrt-example"})
	err := client.Set(sandbox, "rrt:example:session", "x", 0).Err()
	fmt.Println(errors.Is(err, redisroute.ErrSandboxOnBaseline))
	// Output: true
}
