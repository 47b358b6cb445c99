package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sandboxkit/sandboxkit/routes"
	"github.com/sandboxkit/sandboxkit/routes/etcdroutes"
)

// A store holds the sandboxes. change applies f to sandbox id atomically:
// f gets the sandbox (ok false when there is none) and returns what to
// store, nil to delete it.
type store interface {
	list(ctx context.Context) ([]routes.Sandbox, error)
	change(ctx context.Context, id string, f func(sb routes.Sandbox, ok bool) (*routes.Sandbox, error)) error
	close() error
}

// openStore opens the store named by spec: "file:PATH" or
// "etcd://HOST:PORT[,HOST:PORT...]/PREFIX".
func openStore(spec string) (store, error) {
	switch {
	case strings.HasPrefix(spec, "file:"):
		return &fileStore{path: strings.TrimPrefix(spec, "file:")}, nil
	case strings.HasPrefix(spec, "etcd://"):
		rest := strings.TrimPrefix(spec, "etcd://")
		hosts, prefix, ok := strings.Cut(rest, "/")
		if !ok || hosts == "" || prefix == "" {
			return nil, fmt.Errorf("%w: store %q: want etcd://host:port[,host:port]/prefix/", errUsage, spec)
		}
		c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(hosts, ","), DialTimeout: dialTimeout})
		if err != nil {
			return nil, err
		}
		src, err := etcdroutes.New(c, "/"+prefix)
		if err != nil {
			c.Close()
			return nil, err
		}
		return &etcdStore{c: c, src: src}, nil
	}
	return nil, fmt.Errorf("%w: store %q: want file:PATH or etcd://host:port/prefix/", errUsage, spec)
}

// fileStore is a route document in a file, changed under an exclusive
// lock on PATH.lock and replaced by a rename, so that readers (the File
// source) never see half a document.
type fileStore struct{ path string }

func (f *fileStore) close() error { return nil }

func (f *fileStore) read() ([]routes.Sandbox, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return routes.ParseDocument(b)
}

func (f *fileStore) list(context.Context) ([]routes.Sandbox, error) {
	return f.read()
}

func (f *fileStore) change(_ context.Context, id string, fn func(routes.Sandbox, bool) (*routes.Sandbox, error)) error {
	lock, err := os.OpenFile(f.path+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	sbs, err := f.read()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(sbs, func(sb routes.Sandbox) bool { return sb.ID == id })
	var cur routes.Sandbox
	if i >= 0 {
		cur = sbs[i]
	}
	next, err := fn(cur, i >= 0)
	if err != nil {
		return err
	}
	switch {
	case next == nil && i >= 0:
		sbs = slices.Delete(sbs, i, i+1)
	case next == nil:
		return nil
	case i >= 0:
		sbs[i] = *next
	default:
		sbs = append(sbs, *next)
	}
	b, err := routes.Document{Sandboxes: sbs}.MarshalJSON()
	if err != nil {
		return err
	}
	if _, err := routes.ParseDocument(b); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path), ".sandboxctl-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	// Without a sync the rename can reach the disk before the data: a
	// crash would then leave PATH empty or truncated instead of old.
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), f.path)
}

// etcdStore is one key per sandbox in etcd (see etcdroutes), changed with
// a transaction conditional on the key's revision.
type etcdStore struct {
	c   *clientv3.Client
	src *etcdroutes.Source
}

func (e *etcdStore) close() error { return e.c.Close() }

func (e *etcdStore) list(ctx context.Context) ([]routes.Sandbox, error) {
	resp, err := e.c.Get(ctx, e.src.Prefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	sbs := make([]routes.Sandbox, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		sb, err := etcdroutes.Unmarshal(strings.TrimPrefix(string(kv.Key), e.src.Prefix()), kv.Value)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", kv.Key, err)
		}
		sbs = append(sbs, sb)
	}
	return sbs, nil
}

func (e *etcdStore) change(ctx context.Context, id string, fn func(routes.Sandbox, bool) (*routes.Sandbox, error)) error {
	key := e.src.Key(id)
	for {
		resp, err := e.c.Get(ctx, key)
		if err != nil {
			return err
		}
		var (
			cur routes.Sandbox
			rev int64 // 0: the key does not exist
		)
		if len(resp.Kvs) > 0 {
			if cur, err = etcdroutes.Unmarshal(id, resp.Kvs[0].Value); err != nil {
				return fmt.Errorf("key %q: %w", key, err)
			}
			rev = resp.Kvs[0].ModRevision
		}
		next, err := fn(cur, rev != 0)
		if err != nil {
			return err
		}
		var op clientv3.Op
		switch {
		case next == nil && rev == 0:
			return nil
		case next == nil:
			op = clientv3.OpDelete(key)
		default:
			v, err := etcdroutes.Marshal(*next)
			if err != nil {
				return err
			}
			op = clientv3.OpPut(key, string(v))
		}
		txn, err := e.c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(op).Commit()
		if err != nil {
			return err
		}
		if txn.Succeeded {
			return nil
		}
		// Someone else changed the sandbox meanwhile: do it again on
		// what they wrote.
	}
}
