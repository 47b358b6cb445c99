package routes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
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

// parsedDoc is a validated document a built-in source ([File], [HTTP])
// hands out. It is never modified, so a table keeps it as is, and a table
// knows by its identity whether it already holds the source's content.
type parsedDoc struct {
	sbs []Sandbox
	// Each sandbox's bytes in the document and an index of them by hash,
	// so that the next document reuses the sandboxes it repeats.
	seed  maphash.Seed
	raws  [][]byte
	byRaw map[uint64]int
}

// docSource is implemented by the built-in sources. fetchDoc returns the
// source's current document, or [ErrNotModified] when that is have: each
// table asks for what it holds, so tables sharing a source (or a table
// changed by hand in between) never take "unchanged" for content they do
// not have.
type docSource interface {
	fetchDoc(ctx context.Context, have *parsedDoc) (*parsedDoc, error)
}

// fetchPublic serves the Fetch method of a built-in source from its
// fetchDoc: [ErrNotModified] when the document is the one Fetch last
// returned (*fetched, guarded by mu), which it records. Not the source's
// own latest document: a read abandoned by its fetch ([File]) or a table
// given the source may have brought that in, and it was never returned
// to Fetch's callers.
func fetchPublic(ctx context.Context, src docSource, mu *sync.Mutex, fetched **parsedDoc) ([]Sandbox, error) {
	mu.Lock()
	have := *fetched
	mu.Unlock()
	doc, err := src.fetchDoc(ctx, have)
	if err != nil {
		return nil, err
	}
	mu.Lock()
	*fetched = doc
	mu.Unlock()
	return cloneSandboxes(doc.sbs), nil
}

// File returns a [Source] reading the JSON document at path (see the package
// doc for the format). It re-reads the file only when it changed (another
// file, size, modification time or, where the system gives it, inode
// change time), and parses it only when its bytes changed. path may be a
// symbolic link that is swapped atomically, as in a Kubernetes ConfigMap
// volume, where path links to ..data/<key> and the kubelet replaces the
// ..data link: each fetch follows the links afresh.
//
// A read that does not return (a hung NFS or FUSE mount, a named pipe no
// one writes) is abandoned when the fetch's context is done, and fails
// the fetch; the fetches after it fail at once while it still hangs.
func File(path string) Source {
	return &fileSource{path: path, reading: make(chan struct{}, 1)}
}

type fileSource struct {
	path string
	// reading holds a token while a read of the file is under way: one at
	// a time, and one that hangs holds it until it returns.
	reading chan struct{}

	// Written by the holder of reading, under mu; mu alone guards reads
	// of doc by others.
	mu      sync.Mutex
	fi      os.FileInfo // of the file that doc was read from
	ctime   time.Time   // fi's inode change time (see changeTime)
	content []byte
	doc     *parsedDoc
	fetched *parsedDoc // the document Fetch last returned (fetchPublic)
}

func (f *fileSource) Fetch(ctx context.Context) ([]Sandbox, error) {
	return fetchPublic(ctx, f, &f.mu, &f.fetched)
}

func (f *fileSource) fetchDoc(ctx context.Context, have *parsedDoc) (*parsedDoc, error) {
	select {
	case f.reading <- struct{}{}:
	default:
		select {
		case f.reading <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("routes: %s: an earlier read has not returned: %w", f.path, ctx.Err())
		}
	}
	if err := ctx.Err(); err != nil {
		<-f.reading // no read for a fetch given up already
		return nil, fmt.Errorf("routes: reading %s: %w", f.path, err)
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-f.reading }()
		done <- f.refresh()
	}()
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("routes: reading %s: %w", f.path, ctx.Err())
	}
	f.mu.Lock()
	doc := f.doc
	f.mu.Unlock()
	if doc == have {
		return nil, ErrNotModified
	}
	return doc, nil
}

// refresh brings f.doc up to date with the file.
//
// A read that races the kubelet's swap of a ConfigMap volume can follow
// the old ..data link into the directory the kubelet removes right after
// the swap, and find no file: refresh then tries again, through the new
// link. A file that stays missing is an error. A reader slowed down (by
// load, or the race detector) can lose that race to swaps that follow one
// another closely several times in a row: three tries failed a load once
// in TestFileConfigMapSwapWhileReading's back-to-back swaps, so it tries
// up to ten times (a missing file costs ten failed opens).
func (f *fileSource) refresh() error {
	var err error
	for range 10 {
		if err = f.refreshOnce(); !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return err
}

func (f *fileSource) refreshOnce() error {
	// Stat the file opened, not the path: the links may be swapped
	// between a stat and a read, and what is cached must be what was
	// read.
	file, err := os.Open(f.path) // follows the links
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("routes: %s is not a regular file (%v)", f.path, fi.Mode().Type())
	}
	// The change time too: a copy in place that restores the
	// modification time (cp -p of a reproducible build's file, where every
	// mtime is one constant) keeps the file, and often the size.
	ctime := changeTime(fi)
	if f.doc != nil && os.SameFile(fi, f.fi) && fi.Size() == f.fi.Size() && fi.ModTime().Equal(f.fi.ModTime()) && ctime.Equal(f.ctime) {
		return nil
	}
	b, err := io.ReadAll(file)
	if err != nil {
		return fmt.Errorf("routes: reading %s: %w", f.path, err)
	}
	if f.doc != nil && bytes.Equal(b, f.content) {
		f.mu.Lock()
		f.fi, f.ctime = fi, ctime
		f.mu.Unlock()
		return nil
	}
	doc, err := parseDocument(b, f.doc)
	if err != nil {
		return fmt.Errorf("%w (file %s)", err, f.path)
	}
	f.mu.Lock()
	f.fi, f.ctime, f.content, f.doc = fi, ctime, b, doc
	f.mu.Unlock()
	return nil
}

// MaxDocumentSize is the largest route document [HTTP] accepts.
const MaxDocumentSize = 16 << 20

// The timeouts of the client [HTTP] uses when given none.
const (
	// DefaultDialTimeout bounds connecting to the server, and the TLS
	// handshake.
	DefaultDialTimeout = 5 * time.Second
	// DefaultResponseHeaderTimeout bounds the wait for the response's
	// headers once the request is sent.
	DefaultResponseHeaderTimeout = 10 * time.Second
	// DefaultFetchTimeout bounds a whole fetch, body included: the default
	// client's overall timeout, and the default of [FetchTimeout] for
	// every source that [Table.Sync] fetches.
	DefaultFetchTimeout = 15 * time.Second
)

// HTTP returns a [Source] that GETs the JSON document at url with client.
// A nil client is one of the package's own with timeouts
// ([DefaultDialTimeout], [DefaultResponseHeaderTimeout], and
// [DefaultFetchTimeout] overall), so that a hung or slow server is an
// error rather than a sync that stops; a client you pass keeps its own
// timeouts ([Table.Sync] bounds each fetch with [FetchTimeout] either way).
//
// Requests are conditional: the source sends If-None-Match with the ETag
// and If-Modified-Since with the Last-Modified of the last document it
// read, and a 304 answer means that document. A 304 to a request that
// carried neither is an error. Validators of a response whose
// Last-Modified is less than a second before its Date are not kept (the
// document may change again within that second, unseen by a validator in
// whole seconds: a static server's), so the next fetch is a full one.
// Any status other than 200 and 304 is an error, as is a body over
// [MaxDocumentSize] or a document that [ParseDocument] rejects. The
// default client follows redirects only on the server of url (same
// scheme, host and port); a redirect to another server is an error.
func HTTP(url string, client *http.Client) Source {
	if client == nil {
		client = newHTTPClient()
	}
	return &httpSource{url: url, client: client}
}

// newHTTPClient returns a client with the default timeouts, on a transport
// of its own.
func newHTTPClient() *http.Client {
	dialer := &net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout:       DefaultFetchTimeout,
		CheckRedirect: sameOrigin,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   DefaultDialTimeout,
			ResponseHeaderTimeout: DefaultResponseHeaderTimeout,
			ExpectContinueTimeout: time.Second,
			MaxIdleConnsPerHost:   1,
			IdleConnTimeout:       90 * time.Second,
		},
	}
}

// sameOrigin lets the default client follow a redirect only to the server
// (scheme, host and port) of the first request: the route table decides
// where sandbox traffic goes, and is read only from where it was
// configured.
func sameOrigin(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if from := via[0].URL; req.URL.Scheme != from.Scheme || req.URL.Host != from.Host {
		return fmt.Errorf("refusing a redirect from %s://%s to another server, %s://%s", from.Scheme, from.Host, req.URL.Scheme, req.URL.Host)
	}
	return nil
}

// settled reports whether the validators of a response with the given
// Last-Modified and Date headers name its document alone. A static server
// (Go's http.FileServer, nginx, whose ETag is the modification second and
// the length) names a version by its modification time in whole seconds:
// a document modified less than a second before the response was made
// can change again within that second, and a conditional request would
// then be answered 304 for a document the source never read. Such a
// Last-Modified is weak (RFC 9110, 8.8.2.2), and so, for all the source
// can tell, is the ETag beside it: neither is kept, and the next fetch is
// a full one. A response without Last-Modified is settled; one with it
// and without a Date cannot be told, and is not.
func settled(lastModified, date string) bool {
	if lastModified == "" {
		return true
	}
	lm, err := http.ParseTime(lastModified)
	if err != nil {
		return false
	}
	d, err := http.ParseTime(date)
	if err != nil {
		return false
	}
	return d.Sub(lm) >= time.Second
}

type httpSource struct {
	url    string
	client *http.Client

	mu           sync.Mutex
	doc          *parsedDoc // the last document read, which the validators name
	etag         string
	lastModified string
	fetched      *parsedDoc // the document Fetch last returned (fetchPublic)
}

func (h *httpSource) Fetch(ctx context.Context) ([]Sandbox, error) {
	return fetchPublic(ctx, h, &h.mu, &h.fetched)
}

func (h *httpSource) fetchDoc(ctx context.Context, have *parsedDoc) (*parsedDoc, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	h.mu.Lock()
	cached, etag, lastModified := h.doc, h.etag, h.lastModified
	h.mu.Unlock()
	validated := cached != nil && (etag != "" || lastModified != "")
	if validated {
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		if lastModified != "" {
			req.Header.Set("If-Modified-Since", lastModified)
		}
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("routes: fetching %s: %w", h.url, err)
	}
	defer resp.Body.Close()
	var doc *parsedDoc
	switch resp.StatusCode {
	case http.StatusOK:
		b, err := io.ReadAll(io.LimitReader(resp.Body, MaxDocumentSize+1))
		if err != nil {
			return nil, fmt.Errorf("routes: fetching %s: reading the body: %w", h.url, err)
		}
		if len(b) > MaxDocumentSize {
			return nil, fmt.Errorf("routes: %s: document larger than %d bytes", h.url, MaxDocumentSize)
		}
		if doc, err = parseDocument(b, cached); err != nil {
			return nil, fmt.Errorf("%w (from %s)", err, h.url)
		}
		etag, lastModified := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
		if !settled(lastModified, resp.Header.Get("Date")) {
			etag, lastModified = "", ""
		}
		h.mu.Lock()
		h.doc, h.etag, h.lastModified = doc, etag, lastModified
		h.mu.Unlock()
	case http.StatusNotModified:
		if !validated {
			return nil, fmt.Errorf("routes: fetching %s: 304 Not Modified to a request without a validator (If-None-Match, If-Modified-Since)", h.url)
		}
		doc = cached
	default:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("routes: fetching %s: %s", h.url, resp.Status)
	}
	if doc == have {
		return nil, ErrNotModified
	}
	return doc, nil
}

// Load fetches src once and applies it. On failure the table keeps its
// content and the error is returned (and reported by [Table.Err], with
// since when the source has been failing and its last good load, unless
// ctx was canceled: the caller gave up, the source did not fail). The
// fetch is bounded by ctx only: give it a deadline (or use [Table.Sync],
// which does).
//
// The first Load (or [Table.Sync]) gives the table a source for good:
// [Table.SyncedAt] is the start of the last successful Load from then on,
// the zero time until there is one. [ErrNotModified] from a source this
// table has never loaded successfully is an error: the table cannot hold
// what the source says is unchanged. ([File] and [HTTP] know what each
// table holds, and hand it their document when it is not that.)
func (t *Table) Load(ctx context.Context, src Source) error {
	t.setSourced()
	start := t.now()
	var (
		sbs []Sandbox
		doc *parsedDoc
		err error
	)
	if ds, ok := src.(docSource); ok {
		doc, err = ds.fetchDoc(ctx, t.applied.Load())
	} else {
		sbs, err = src.Fetch(ctx)
	}
	switch {
	case errors.Is(err, ErrNotModified):
		if t.synced.Load() == neverSynced {
			return t.failed(start, fmt.Errorf("routes: the source reports no change, but this table never loaded it: %w", err))
		}
		t.setErr(nil)
	case err != nil:
		if errors.Is(ctx.Err(), context.Canceled) {
			return err // the caller gave up: not the source's failure
		}
		return t.failed(start, err)
	default:
		if err := t.update(sbs, doc, start); err != nil {
			return t.failed(start, err)
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
	interval     time.Duration
	maxBackoff   time.Duration
	jitter       float64
	fetchTimeout time.Duration
	onError      func(error)
	rand         func() float64 // in [0, 1)
}

// ErrSyncOption reports a [Table.Sync] option out of its range.
var ErrSyncOption = errors.New("routes: invalid sync option")

// DefaultJitter is the default of [Jitter].
const DefaultJitter = 0.2

// Every sets how often Sync fetches (default 1s).
func Every(d time.Duration) SyncOption {
	return syncOptionFunc(func(c *syncConfig) { c.interval = d })
}

// MaxBackoff caps the wait between failed fetches, which doubles from the
// interval after each failure (default 30s).
func MaxBackoff(d time.Duration) SyncOption {
	return syncOptionFunc(func(c *syncConfig) { c.maxBackoff = d })
}

// Jitter spreads the fetches: each wait (the interval, or the backoff after
// a failure) is drawn uniformly from [1-f, 1+f] times itself, so that the
// pods of a fleet started together do not poll the source in lockstep.
// f is in [0, 1); the default is [DefaultJitter], 0 turns jitter off.
func Jitter(f float64) SyncOption {
	return syncOptionFunc(func(c *syncConfig) { c.jitter = f })
}

// FetchTimeout bounds each fetch (default [DefaultFetchTimeout]): one that
// takes longer is abandoned, counted as a failure and reported by
// [Table.Err], so a hung source cannot stop the sync unseen.
func FetchTimeout(d time.Duration) SyncOption {
	return syncOptionFunc(func(c *syncConfig) { c.fetchTimeout = d })
}

// OnError is called with every failed fetch or rejected document.
func OnError(f func(error)) SyncOption {
	return syncOptionFunc(func(c *syncConfig) { c.onError = f })
}

func newSyncConfig(opts []SyncOption) (syncConfig, error) {
	cfg := syncConfig{
		interval:     time.Second,
		maxBackoff:   30 * time.Second,
		jitter:       DefaultJitter,
		fetchTimeout: DefaultFetchTimeout,
		rand:         rand.Float64,
	}
	for _, o := range opts {
		o.apply(&cfg)
	}
	switch {
	case cfg.interval <= 0:
		return cfg, fmt.Errorf("%w: interval %v must be positive", ErrSyncOption, cfg.interval)
	case cfg.fetchTimeout <= 0:
		return cfg, fmt.Errorf("%w: fetch timeout %v must be positive", ErrSyncOption, cfg.fetchTimeout)
	case !(cfg.jitter >= 0 && cfg.jitter < 1):
		return cfg, fmt.Errorf("%w: jitter %v must be in [0, 1)", ErrSyncOption, cfg.jitter)
	}
	if cfg.maxBackoff < cfg.interval {
		cfg.maxBackoff = cfg.interval
	}
	return cfg, nil
}

// spread returns d jittered: uniform in [1-jitter, 1+jitter] times d.
func (c *syncConfig) spread(d time.Duration) time.Duration {
	if c.jitter == 0 {
		return d
	}
	return time.Duration(float64(d) * (1 + c.jitter*(2*c.rand()-1)))
}

// Sync keeps the table in sync with src until ctx is done, and then returns
// ctx's error. It fetches at once and then every interval, jittered
// ([Jitter]), each fetch bounded by [FetchTimeout]; after a failure it
// keeps the last good content and retries with exponential backoff. A
// source must honour the context it is given. [Table.SyncedAt] reports the
// start of the last successful fetch, during Sync and after it returns.
func (t *Table) Sync(ctx context.Context, src Source, opts ...SyncOption) error {
	cfg, err := newSyncConfig(opts)
	if err != nil {
		return err
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
		fctx, cancel := context.WithTimeout(ctx, cfg.fetchTimeout)
		err := t.Load(fctx, src)
		cancel()
		if err != nil {
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
		timer.Reset(cfg.spread(wait))
	}
}
