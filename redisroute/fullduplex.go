package redisroute

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// A go-redis AutoPipeliner in full-duplex mode (AutoPipelineOptions.FullDuplex
// on a client with a pipeline pool) does not let hooks gate its writes. In
// go-redis 9.23, fdEngine.submit (autopipeline_fullduplex.go) pushes the
// command onto the queue of the held connection, and only then starts
// fdEngine.hostHook on a goroutine of its own, which runs the process hooks
// with the caller's context around a final step that waits for the reply;
// a hook that returns without calling next does not cancel the write
// ("a hook cannot cancel a full-duplex command", AutoPipeliner.AddHook). Nothing
// on the way consults a hook or the context before the write: the submit-time
// filters (preflight, mustDivert) are set by cluster wiring only, and
// Options.Limiter is asked per written chunk with no command in sight.
//
// So the hooks must at least know where they run. A hook called on the
// goroutine of fdEngine.hostHook sees a command that is already on the wire;
// one called on another goroutine of the engine (run, attempt: the
// initialisation of its held connection, with the context of the command
// that started the session; a retry off the reader) sees commands that are
// about to be written by the engine itself, not by a hook's next.
const fdEngineFrame = "github.com/redis/go-redis/v9.(*fdEngine)."

// fdPlace is where a hook runs relative to a full-duplex engine.
type fdPlace uint8

const (
	fdNone   fdPlace = iota // not on a full-duplex engine's goroutine
	fdHost                  // fdEngine.hostHook: the command is already written
	fdEngine                // another fdEngine goroutine (connection init, retries)
)

// fullDuplexPlace walks the calling goroutine's stack for the frames of a
// go-redis full-duplex engine. It runs only for sandbox traffic, never on
// the production path, and after the first sight of each call site costs
// runtime.Callers and a map lookup a frame (pcPlace).
func fullDuplexPlace() fdPlace {
	var buf [48]uintptr
	pcs := buf[:]
	n := runtime.Callers(2, pcs)
	for n == len(pcs) && len(pcs) < 1<<14 {
		// Deeper than the buffer: the goroutine's entry frame (where
		// hostHook is) was cut off. Look at all of it.
		pcs = make([]uintptr, 2*len(pcs))
		n = runtime.Callers(2, pcs)
	}
	places := *pcPlaces.Load()
	place := fdNone
	for _, pc := range pcs[:n] {
		p, ok := places[pc]
		if !ok {
			p = learnPC(pc)
		}
		switch p {
		case fdHost:
			return fdHost
		case fdEngine:
			place = fdEngine
		}
	}
	return place
}

// pcPlaces maps a return address found on a stack to the place its frame
// (and the frames inlined at it) stand for. Copy-on-write: a published map
// is never modified. Return addresses are a finite set of call sites.
var pcPlaces = func() *atomic.Pointer[map[uintptr]fdPlace] {
	var p atomic.Pointer[map[uintptr]fdPlace]
	p.Store(&map[uintptr]fdPlace{})
	return &p
}()

// learnPC finds what the frames at return address pc are, inlined ones
// included, and records it.
func learnPC(pc uintptr) fdPlace {
	place := fdNone
	frames := runtime.CallersFrames([]uintptr{pc})
	for {
		f, more := frames.Next()
		if rest, ok := strings.CutPrefix(f.Function, fdEngineFrame); ok {
			if strings.HasPrefix(rest, "hostHook") {
				place = fdHost
				break
			}
			place = fdEngine
		}
		if !more {
			break
		}
	}
	pcPlacesMu.Lock()
	defer pcPlacesMu.Unlock()
	old := *pcPlaces.Load()
	m := make(map[uintptr]fdPlace, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[pc] = place
	pcPlaces.Store(&m)
	return place
}

var pcPlacesMu sync.Mutex

// fullDuplex handles a sandbox command (of sandbox id) that a ProcessHook
// sees on a full-duplex engine's goroutine: it returns true and the
// command's error there, and false and nil anywhere else (the hook goes on
// as usual).
//
// On fdEngine.hostHook the command is already queued for the baseline's
// connection: next waits for its outcome (as an observing hook may) and
// the command fails with [ErrLeaked], having run in production; or, when
// the engine could not initialise its connection because the session was
// started by a sandbox command (the hooks refuse that initialisation, see
// below), with the error that says nothing was sent. On the engine's other
// goroutines (the initialisation of its held connection with the context of
// the command that started the session, a retry off the reader) the hook
// refuses: the engine writes without asking the hooks again.
func fullDuplex(ctx context.Context, cmd redis.Cmder, id string, next redis.ProcessHook) (bool, error) {
	switch fullDuplexPlace() {
	case fdHost:
		err := next(ctx, cmd)
		if errors.Is(err, ErrRefused) || errors.Is(err, ErrSandboxOnBaseline) {
			return true, fmt.Errorf("%w: sandbox %q: %s: not sent: the full-duplex AutoPipeliner (AutoPipelineOptions.FullDuplex) could not open its connection with a sandbox context (%w)", ErrRefused, id, cmd.Name(), err)
		}
		// The reply is production's: clear it, so that a caller who reads
		// Val() without looking at Err() does not read production's data.
		clearReply(cmd)
		return true, fmt.Errorf("%w: sandbox %q: %s: a full-duplex AutoPipeliner (AutoPipelineOptions.FullDuplex) wrote it to the baseline's connection before any hook ran, and it ran there (reply error: %v); it is failed here and not run in the sandbox: do not use a full-duplex AutoPipeliner with sandbox contexts", ErrLeaked, id, cmd.Name(), err)
	case fdEngine:
		return true, fmt.Errorf("%w: sandbox %q: %s: sent by a full-duplex AutoPipeliner's engine (AutoPipelineOptions.FullDuplex), whose writes no hook can stop: do not use one with sandbox contexts", ErrRefused, id, cmd.Name())
	}
	return false, nil
}

// replyFields are the fields in which go-redis command types keep their
// reply: val in nearly all of them, page and cursor in ScanCmd.
var replyFields = [...]string{"val", "page", "cursor"}

// clearReply sets the reply fields of cmd, a go-redis command type or a
// type of the caller's that embeds one (by value, by pointer, or through
// an embedded redis.Cmder interface), to their
// zero values (through reflect, with the write barriers a pointer store
// needs). A command of another shape is left alone.
func clearReply(cmd redis.Cmder) {
	v := reflect.ValueOf(cmd)
	// Down to the struct whose fields hold the reply: through pointers, and
	// through an embedded redis.Cmder interface (the command whose methods
	// the type has: go-redis reads the reply into it), however deep.
	for range maxHops {
		if v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
			if v.IsNil() {
				return
			}
			v = v.Elem()
			continue
		}
		if v.Kind() != reflect.Struct {
			return
		}
		p := pathOf(v.Type())
		if p == nil || !p.iface {
			break
		}
		b, err := v.FieldByIndexErr(p.path)
		if err != nil {
			return
		}
		v = b
	}
	if v.Kind() != reflect.Struct {
		return
	}
	for _, name := range replyFields {
		f, ok := v.Type().FieldByName(name)
		if !ok {
			continue
		}
		fv, err := v.FieldByIndexErr(f.Index)
		if err != nil || !fv.CanAddr() {
			continue
		}
		p := unsafe.Pointer(fv.UnsafeAddr())
		reflect.NewAt(f.Type, p).Elem().SetZero()
	}
}

// fullDuplexConfigured reports whether a client's default autopipeliner
// options (Options.AutoPipelineOptions) run full duplex: FullDuplex set on
// a client that has a pipeline pool (PipelinePoolSize >= 0), the only
// clients on which go-redis engages it (newAutoPipeliner's fdOn).
func fullDuplexConfigured(opt *redis.Options) bool {
	ap := opt.AutoPipelineOptions
	return ap != nil && ap.FullDuplex && opt.PipelinePoolSize >= 0
}

// errFullDuplex is the error of New and Guard for such a client.
func errFullDuplex(fn string) error {
	return fmt.Errorf("%w: redisroute: %s: the client's Options.AutoPipelineOptions sets FullDuplex: a full-duplex AutoPipeliner writes each command before any hook runs, so no hook can keep a sandbox's command out of production (clear FullDuplex, or set PipelinePoolSize < 0, which makes go-redis fall back to half-duplex batches that the hooks gate)", ErrConfig, fn)
}

// pinHalfDuplex builds client's two cached AutoPipeliners (the blocking
// face of AutoPipeline and the deferred face of AsyncAutoPipeline) now,
// in half-duplex mode, so that a later AutoPipelineWithOptions or
// AsyncAutoPipelineWithOptions asking for FullDuplex gets them instead of
// building a full-duplex engine. In go-redis 9.23 each face is cached per
// client and the first call's config wins (redis.go:
// Client.AutoPipelineWithOptions -> getOrCreateAutoPipeliner in
// autopipeline.go returns the cached instance, whatever config is passed,
// until that instance is closed). The options are the client's own
// (Options.AutoPipelineOptions, or go-redis's defaults): what a first
// AutoPipeline() would have built. fullDuplexConfigured must have been
// checked first: with FullDuplex in the client's options this would start
// full-duplex engines.
//
// An instance cached before (an AutoPipelineWithOptions call before New or
// Guard) is kept; if it runs full duplex, pinHalfDuplex fails with
// ErrConfig. Each pinned face costs go-redis's half-duplex flusher
// goroutine, until the client (or the instance) is closed; no connection
// is dialled until it sends.
func pinHalfDuplex(client *redis.Client, fn string) error {
	for _, face := range [...]struct {
		name string
		get  func() (*redis.AutoPipeliner, error)
	}{{"AutoPipeline", client.AutoPipeline}, {"AsyncAutoPipeline", client.AsyncAutoPipeline}} {
		ap, err := face.get()
		if err != nil {
			return fmt.Errorf("%w: redisroute: %s: client.%s: %w", ErrConfig, fn, face.name, err)
		}
		if ap.Config().FullDuplex {
			return fmt.Errorf("%w: redisroute: %s: the client's %s instance, built before, runs full duplex (AutoPipelineOptions.FullDuplex): a full-duplex AutoPipeliner writes each command before any hook runs, so no hook can keep a sandbox's command out of production (close it first: New and Guard then pin a half-duplex one)", ErrConfig, fn, face.name)
		}
	}
	return nil
}
