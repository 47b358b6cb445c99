package routes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// ErrNotModified is returned by a [Source] whose content has not changed
// since its last successful fetch. [Table.Sync] counts it as a successful
// sync.
var ErrNotModified = errors.New("routes: source not modified")

// Source fetches the route table's content.
type Source interface {
	Fetch(ctx context.Context) ([]Sandbox, error)
}

// SourceFunc adapts a function to [Source].
type SourceFunc func(ctx context.Context) ([]Sandbox, error)

// Fetch calls f.
func (f SourceFunc) Fetch(ctx context.Context) ([]Sandbox, error) { return f(ctx) }

// File returns a [Source] reading the JSON document at path (see the package
// doc for the format). It re-reads the file only when its size or
// modification time changed, and parses it only when its bytes changed.
func File(path string) Source { return &fileSource{path: path} }

type fileSource struct {
	path string

	mu      sync.Mutex
	size    int64
	modTime time.Time
	content []byte
}

func (f *fileSource) Fetch(context.Context) ([]Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Stat(f.path)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	if f.content != nil && fi.Size() == f.size && fi.ModTime().Equal(f.modTime) {
		return nil, ErrNotModified
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	if f.content != nil && bytes.Equal(b, f.content) {
		f.size, f.modTime = fi.Size(), fi.ModTime()
		return nil, ErrNotModified
	}
	sbs, err := ParseDocument(b)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, f.path)
	}
	f.size, f.modTime, f.content = fi.Size(), fi.ModTime(), b
	return sbs, nil
}

// MaxDocumentSize is the largest route document [HTTP] accepts.
const MaxDocumentSize = 16 << 20

// HTTP returns a [Source] that GETs the JSON document at url with client
// (http.DefaultClient when nil). It sends If-None-Match with the last ETag
// and treats 304 as [ErrNotModified]; any status other than 200 and 304 is
// an error.
func HTTP(url string, client *http.Client) Source {
	if client == nil {
		client = http.DefaultClient
	}
	return &httpSource{url: url, client: client}
}

type httpSource struct {
	url    string
	client *http.Client

	mu   sync.Mutex
	etag string
}

func (h *httpSource) Fetch(ctx context.Context) ([]Sandbox, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	h.mu.Lock()
	if h.etag != "" {
		req.Header.Set("If-None-Match", h.etag)
	}
	h.mu.Unlock()
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("routes: fetching %s: %w", h.url, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified:
		return nil, ErrNotModified
	default:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("routes: fetching %s: %s", h.url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("routes: fetching %s: %w", h.url, err)
	}
	if len(b) > MaxDocumentSize {
		return nil, fmt.Errorf("routes: %s: document larger than %d bytes", h.url, MaxDocumentSize)
	}
	sbs, err := ParseDocument(b)
	if err != nil {
		return nil, fmt.Errorf("%w (from %s)", err, h.url)
	}
	h.mu.Lock()
	h.etag = resp.Header.Get("ETag")
	h.mu.Unlock()
	return sbs, nil
}

// Load fetches src once and applies it. On failure the table keeps its
// content and the error is returned (and reported by [Table.Err]).
//
// The first Load (or [Table.Sync]) gives the table a source for good:
// [Table.SyncedAt] is the start of the last successful Load from then on,
// the zero time until there is one. [ErrNotModified] from a source this
// table has never loaded successfully is an error: the table cannot hold
// what the source says is unchanged.
func (t *Table) Load(ctx context.Context, src Source) error {
	t.setSourced()
	start := t.now()
	sbs, err := src.Fetch(ctx)
	switch {
	case errors.Is(err, ErrNotModified):
		if t.synced.Load() == neverSynced {
			err = fmt.Errorf("routes: the source reports no change, but this table never loaded it: %w", err)
			t.setErr(err)
			return err
		}
		t.setErr(nil)
	case err != nil:
		t.setErr(err)
		return err
	default:
		if err := t.update(sbs, start); err != nil {
			return err
		}
	}
	t.markSynced(start)
	return nil
}

// SyncOption configures [Table.Sync].
type SyncOption interface{ apply(*syncConfig) }

type syncOptionFunc func(*syncConfig)

func (f syncOptionFunc) apply(c *syncConfig) { f(c) }

type syncConfig struct {
	interval   time.Duration
	maxBackoff time.Duration
	onError    func(error)
}

// Every sets how often Sync fetches (default 1s).
func Every(d time.Duration) SyncOption {
	return syncOptionFunc(func(c *syncConfig) { c.interval = d })
}

// MaxBackoff caps the wait between failed fetches, which doubles from the
// interval after each failure (default 30s).
func MaxBackoff(d time.Duration) SyncOption {
	return syncOptionFunc(func(c *syncConfig) { c.maxBackoff = d })
}

// OnError is called with every failed fetch or rejected document.
func OnError(f func(error)) SyncOption {
	return syncOptionFunc(func(c *syncConfig) { c.onError = f })
}

// Sync keeps the table in sync with src until ctx is done, and then returns
// ctx's error. It fetches at once and then every interval; after a failure
// it keeps the last good content and retries with exponential backoff.
// [Table.SyncedAt] reports the start of the last successful fetch, during
// Sync and after it returns.
func (t *Table) Sync(ctx context.Context, src Source, opts ...SyncOption) error {
	cfg := syncConfig{interval: time.Second, maxBackoff: 30 * time.Second}
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.interval <= 0 {
		return errors.New("routes: sync interval must be positive")
	}
	if cfg.maxBackoff < cfg.interval {
		cfg.maxBackoff = cfg.interval
	}
	t.setSourced()

	wait := cfg.interval
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		if err := t.Load(ctx, src); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if cfg.onError != nil {
				cfg.onError(err)
			}
			wait = min(wait*2, cfg.maxBackoff)
		} else {
			wait = cfg.interval
		}
		timer.Reset(wait)
	}
}
