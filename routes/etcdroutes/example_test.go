package etcdroutes_test

import (
	"context"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sandboxkit/sandboxkit/routes"
	"github.com/sandboxkit/sandboxkit/routes/etcdroutes"
)

// A service keeps its route table in sync with etcd for its whole life.
// (Compiled, not run: it needs an etcd at 127.0.0.1:2379. The tests in
// the etcdtest module run the same against a real embedded etcd.)
func Example() {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}, DialTimeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	src, err := etcdroutes.New(cli, "/sandboxkit/routes/", etcdroutes.OnError(func(err error) {
		log.Print(err) // the table keeps its last good content meanwhile
	}))
	if err != nil {
		log.Fatal(err)
	}
	table := routes.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go src.Sync(ctx, table)

	// Decisions about a moment wait until the table provably reflects
	// the store up to it.
	if err := table.WaitSynced(ctx, time.Now()); err != nil {
		log.Fatal(err)
	}
	if up, ok := table.Lookup("pr-42", "cart"); ok {
		log.Printf("pr-42's cart is at %s", up)
	}
}
