package routes_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

func ExampleNewStatic() {
	tbl, err := routes.NewStatic([]routes.Sandbox{{
		ID:       "pr-42",
		Actor:    "alice",
		Services: map[string]routes.Route{"cart": {Upstream: "http://127.0.0.1:9042"}},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tbl.Lookup("pr-42", "cart"))
	fmt.Println(tbl.Lookup("pr-42", "orders"))
	// Output:
	// http://127.0.0.1:9042 true
	//  false
}

func ExampleTable_Sync() {
	dir, _ := os.MkdirTemp("", "routes")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "routes.json")
	os.WriteFile(path, []byte(`{"sandboxes": [
		{"id": "pr-42", "services": {"cart": "http://10.0.3.7:8080"}}
	]}`), 0o644)

	tbl := routes.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Fail fast at start-up, then follow the file in the background.
	if err := tbl.Load(ctx, routes.File(path)); err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tbl.Sync(ctx, routes.File(path), routes.Every(10*time.Millisecond))
	}()
	fmt.Println(tbl.Lookup("pr-42", "cart"))
	cancel()
	<-done
	// Output: http://10.0.3.7:8080 true
}

func ExampleTable_WaitSynced() {
	src := routes.SourceFunc(func(context.Context) ([]routes.Sandbox, error) {
		return []routes.Sandbox{{ID: "pr-42"}}, nil
	})
	tbl := routes.New()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tbl.Sync(ctx, src, routes.Every(10*time.Millisecond))
	}()
	// A message stamped now is decided only by a table that has synced up
	// to it; before its first load the table is not synced at all.
	msgTime := time.Now()
	if err := tbl.WaitSynced(ctx, msgTime); err != nil {
		fmt.Println("routes behind:", err)
		return
	}
	_, ok := tbl.Sandbox("pr-42")
	fmt.Println("pr-42 exists at the message's time:", ok)
	cancel()
	<-done
	// Output: pr-42 exists at the message's time: true
}

func ExampleTable_Put() {
	tbl, _ := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: "10.0.0.1:8080"}}},
		{ID: "pr-2", Services: map[string]routes.Route{"cart": {Upstream: "10.0.0.2:8080"}}},
	})
	// Change one sandbox and drop another, leaving the rest as they are.
	if err := tbl.Put(routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: "10.0.0.9:8080"}}}); err != nil {
		fmt.Println(err)
		return
	}
	tbl.Remove("pr-2")
	fmt.Println(tbl.Lookup("pr-1", "cart"))
	fmt.Println(tbl.Lookup("pr-2", "cart"))
	// Output:
	// 10.0.0.9:8080 true
	//  false
}
