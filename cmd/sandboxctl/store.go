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
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sandboxkit/sandboxkit/routes"
	"github.com/sandboxkit/sandboxkit/routes/etcdroutes"
)

// A store holds the sandboxes. change applies f to sandbox id atomically:
// f gets the sandbox (ok false when there is none) and returns what to
// store, nil to delete it, or errKeep to leave the store as it is.
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
		// "file:" alone (file:$ROUTES with ROUTES unset) names no
		// document: list would find no sandboxes in it.
		path := strings.TrimPrefix(spec, "file:")
		if path == "" {
			return nil, fmt.Errorf("%w: store %q: want file:PATH, the path of the route document", errUsage, spec)
		}
		return &fileStore{path: path}, nil
	case strings.HasPrefix(spec, "etcd://"):
		rest := strings.TrimPrefix(spec, "etcd://")
		hosts, prefix, ok := strings.Cut(rest, "/")
		if !ok || hosts == "" || strings.Trim(prefix, "/") == "" {
			return nil, fmt.Errorf("%w: store %q: want etcd://host:port[,host:port]/prefix/", errUsage, spec)
		}
		// etcd://host//sandboxkit/routes/ (a spec built from the tables'
		// prefix, /sandboxkit/routes/) would write under
		// "//sandboxkit/routes/", where no table looks.
		if strings.HasPrefix(prefix, "/") || strings.Contains(prefix, "//") {
			return nil, fmt.Errorf("%w: store %q: the prefix has an empty segment (//): write the tables' prefix /a/b/ as etcd://host:port/a/b/", errUsage, spec)
		}
		// The tables watch a prefix that ends with a slash; without it
		// the keys would be written beside theirs ("/routespr-1").
		if !strings.HasSuffix(prefix, "/") {
			prefix += "/"
		}
		// The client's own log would mix JSON lines into the command's
		// error output: the errors sandboxctl returns say what failed.
		c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(hosts, ","), DialTimeout: dialTimeout, Logger: zap.NewNop()})
		if err != nil {
			return nil, err
		}
		src, err := etcdroutes.New(c, "/"+prefix)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("%w: store %q: %w", errUsage, spec, err)
		}
		return &etcdStore{c: c, src: src, hosts: hosts}, nil
	}
	return nil, fmt.Errorf("%w: store %q: want file:PATH or etcd://host:port/prefix/", errUsage, spec)
}

// fileStore is a route document in a file, changed under an exclusive
// lock on PATH.lock and replaced by a rename, so that readers (the File
// source) never see half a document.
type fileStore struct{ path string }

func (f *fileStore) close() error { return nil }

// tempPattern matches the temporary files of changes to the document:
// its own, so that the documents sharing a directory (and a lock each)
// never take each other's for stale.
func (f *fileStore) tempPattern() string {
	return globEscape(filepath.Join(filepath.Dir(f.path), "."+filepath.Base(f.path))) + ".sandboxctl-*"
}

// globEscape quotes the metacharacters of filepath.Match in s.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (f *fileStore) read() ([]routes.Sandbox, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		// No document yet is an empty store; no directory for it, or a
		// link to nothing, is a path mistyped or a volume not mounted,
		// not "no sandboxes".
		if _, err := os.Stat(filepath.Dir(f.path)); err != nil {
			return nil, fmt.Errorf("the directory of %s: %w", f.path, err)
		}
		if _, lerr := os.Lstat(f.path); lerr == nil {
			return nil, fmt.Errorf("%s is a symbolic link to a missing file: %w", f.path, err)
		}
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

// target is the file the document is in: f.path, or the file its
// symbolic links name. A change locks and replaces that file, so that a
// link stays a link (the rename would replace it with a file the readers
// of the link's target never see), and so that changes made through the
// link and through the file take one lock. A link to a missing file (a
// volume not mounted) is an error: writing a new document over the link
// would hide the one it names.
func (f *fileStore) target() (*fileStore, error) {
	p, err := filepath.EvalSymlinks(f.path)
	if err == nil {
		return &fileStore{path: p}, nil
	}
	if fi, lerr := os.Lstat(f.path); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s is a symbolic link to a missing file: %w", f.path, err)
	}
	if errors.Is(err, os.ErrNotExist) {
		return f, nil // no document yet: the change creates it
	}
	return nil, err
}

// errRetarget reports that f.path's links named another file once its
// lock was taken: the change starts again on that file.
var errRetarget = errors.New("the symbolic link was swapped")

func (f *fileStore) change(ctx context.Context, id string, fn func(routes.Sandbox, bool) (*routes.Sandbox, error)) error {
	for {
		t, err := f.target()
		if err != nil {
			return err
		}
		// The link is resolved again under the lock: swapped while the
		// change waited for it (a deployment that flips the link to
		// each new version), the change would land in a file no reader
		// of the link sees.
		still := func() error {
			now, err := f.target()
			if err != nil {
				return err
			}
			if now.path != t.path {
				return errRetarget
			}
			return nil
		}
		if err := t.changeFile(ctx, id, fn, still); !errors.Is(err, errRetarget) {
			return err
		}
	}
}

func (f *fileStore) changeFile(ctx context.Context, id string, fn func(routes.Sandbox, bool) (*routes.Sandbox, error), still func() error) error {
	// flock needs no write access: opened read-only, the lock file that
	// one operator created serves the others of a group sharing the
	// document.
	lock, err := os.OpenFile(f.path+".lock", os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close() // releases the lock; so does the kernel when the process dies
	if err := flock(ctx, lock); err != nil {
		return fmt.Errorf("%s: %w", lock.Name(), err)
	}
	if err := still(); err != nil {
		return err
	}
	// Every change of this document writes its temporary file under the
	// lock: one found now is what a killed sandboxctl left behind.
	stale, _ := filepath.Glob(f.tempPattern())
	for _, name := range stale {
		os.Remove(name)
	}
	sbs, err := f.read()
	if err != nil {
		return err
	}
	// The rewritten file keeps the permissions and owner of the one it
	// replaces: the document holds test database DSNs, passwords
	// included, that an operator may have made readable to the service
	// alone.
	old, err := os.Stat(f.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	i := slices.IndexFunc(sbs, func(sb routes.Sandbox) bool { return sb.ID == id })
	var cur routes.Sandbox
	if i >= 0 {
		cur = sbs[i]
	}
	next, err := fn(cur, i >= 0)
	if errors.Is(err, errKeep) {
		return nil
	}
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
	tmp, err := os.CreateTemp(filepath.Dir(f.path), "."+filepath.Base(f.path)+".sandboxctl-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := keepAccess(tmp, old); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", f.path, err)
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
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return err
	}
	// The rename lives in the directory: until the directory is synced, a
	// crash can bring back the old document after sandboxctl reported
	// the change (and CI went on).
	return syncDir(filepath.Dir(f.path))
}

// keepAccess gives tmp the permissions and owner of old, the file it
// replaces (0644 and the caller's owner when there is none). When the
// owner cannot be kept (sandboxctl not run as root nor as the owner), and
// the file is not readable by all, the change is refused: the readers
// that reached the old file through its owner or group could lose the
// new one.
func keepAccess(tmp *os.File, old os.FileInfo) error {
	if old == nil {
		return tmp.Chmod(0o644)
	}
	mode := old.Mode().Perm()
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	st, ok := old.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	cur, err := tmp.Stat()
	if err != nil {
		return err
	}
	if now, ok := cur.Sys().(*syscall.Stat_t); ok && now.Uid == st.Uid && now.Gid == st.Gid {
		return nil
	}
	err = tmp.Chown(int(st.Uid), int(st.Gid))
	if err == nil || mode&0o004 != 0 {
		return nil
	}
	return fmt.Errorf("belongs to %d:%d with mode %v, and the rewritten file could not (%w): its readers could lose it; run sandboxctl as its owner, or root", st.Uid, st.Gid, mode, err)
}

// flock takes the exclusive lock on f, waiting for it until ctx is done:
// a sandboxctl stuck holding it (a stopped CI job) must not hang the
// commands after it past their -timeout. A process that died holding it
// released it with its file descriptors: a lock file left behind stops
// nobody.
func flock(ctx context.Context, f *os.File) error {
	wait := time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("locking: %w", err)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("another sandboxctl holds the lock: %w", ctx.Err())
		case <-timer.C:
		}
		wait = min(wait*2, 50*time.Millisecond)
	}
}

// syncDir flushes the directory dir, so that a rename in it survives a
// crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// etcdStore is one key per sandbox in etcd (see etcdroutes), changed with
// a transaction conditional on the key's revision.
type etcdStore struct {
	c     *clientv3.Client
	src   *etcdroutes.Source
	hosts string
}

// wrap names the store in err.
func (e *etcdStore) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("etcd %s: %w", e.hosts, err)
}

func (e *etcdStore) close() error { return e.c.Close() }

func (e *etcdStore) list(ctx context.Context) ([]routes.Sandbox, error) {
	resp, err := e.c.Get(ctx, e.src.Prefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, e.wrap(err)
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
			return e.wrap(err)
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
		if errors.Is(err, errKeep) {
			return nil
		}
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
			return e.wrap(err)
		}
		if txn.Succeeded {
			return nil
		}
		// Someone else changed the sandbox meanwhile: do it again on
		// what they wrote.
	}
}
