package redisroute

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// A go-redis command keeps the context it was built with (every typed
// method and redis.NewXCmd store it in the command), and that context can
// differ from the one the hooks see: an AutoPipeliner queues commands from
// many callers and sends each batch with context.Background(); a
// pipeline's commands may be built with one context and Exec'd with
// another; Process may be given a command built elsewhere. The hooks read
// each command's own context so that a command built with a sandbox's
// context is never sent as production traffic.
//
// go-redis does not export it: every command type of go-redis embeds its
// unexported baseCmd as its first field (or embeds a command type that
// does), and baseCmd holds the context in a field named ctx. The first
// time a command type is seen, reflect checks that shape and finds the
// context's offset; after that, reading a command's context costs one map
// lookup by the interface's type word. A Cmder of the caller's type has
// unexported methods to implement, so it embeds a go-redis command, often
// by pointer (a wrapper that tags a command), or embeds a redis.Cmder
// interface (a decorator of any command): its baseCmd is found by a
// reflect path down the embedded fields and into the embedded
// interfaces, at any depth, walked on each read (no allocation; such
// types are rare). A walk that stopped at six levels, or at an interface,
// read such a sandbox command as production's
// (TestInterfaceWrappedCommandContextRead). Before that, such a wrapper built
// with a sandbox's context and batched by an AutoPipeliner ran in
// production (TestWrappedCommandContextRead).
var baseCmdType, cmdCtxOffset = func() (reflect.Type, uintptr) {
	t := reflect.TypeFor[redis.StatusCmd]()
	if t.NumField() == 0 || !t.Field(0).Anonymous {
		return nil, 0
	}
	base := t.Field(0).Type
	if base.Kind() != reflect.Struct {
		return nil, 0
	}
	f, ok := base.FieldByName("ctx")
	if !ok || f.Type != reflect.TypeFor[context.Context]() || len(f.Index) != 1 {
		return nil, 0
	}
	return base, f.Offset
}()

// noCtx marks a command type without a readable context; viaPath one
// whose go-redis command is reached through an embedded pointer (a type of
// the caller's that embeds *redis.StatusCmd, say): its context is found by
// the reflect path in cmdPaths.
const (
	noCtx   = ^uintptr(0)
	viaPath = noCtx - 1
)

var (
	// cmdTypes maps the type word of a redis.Cmder interface value to the
	// offset of the command's context from its data pointer, noCtx or
	// viaPath. Copy-on-write: a published map is never modified.
	cmdTypes   atomic.Pointer[map[unsafe.Pointer]uintptr]
	cmdTypesMu sync.Mutex
	// cmdPaths maps the reflect.Type of a struct type that is, or is
	// pointed to by, a viaPath type or a command held in its interface
	// fields, to its *cmdPath (nil: none found).
	cmdPaths sync.Map
)

func init() {
	cmdTypes.Store(&map[unsafe.Pointer]uintptr{})
}

// cmdPath is the index path (reflect.Value.FieldByIndexErr) from a struct
// type to the baseCmd whose methods it has, or to the embedded interface
// field (iface) that holds the command whose methods it has.
type cmdPath struct {
	path  []int
	iface bool
}

// maxHops bounds the interface fields and pointers walked to a command's
// baseCmd (a wrapper that holds itself would loop).
const maxHops = 64

// iface is the layout of a non-empty interface value.
type iface struct {
	tab  unsafe.Pointer
	data unsafe.Pointer
}

// cmdContext returns the context cmd was built with, or nil.
func cmdContext(cmd redis.Cmder) context.Context {
	if p := ctxField(cmd); p != nil {
		return *(*context.Context)(p)
	}
	return nil
}

// ctxField returns the address of the context field of cmd's go-redis
// command, or nil.
func ctxField(cmd redis.Cmder) unsafe.Pointer {
	i := (*iface)(unsafe.Pointer(&cmd))
	if i.data == nil {
		return nil
	}
	off, ok := (*cmdTypes.Load())[i.tab]
	if !ok {
		off = learn(cmd, i.tab)
	}
	switch off {
	case noCtx:
		return nil
	case viaPath:
		return pathCtxField(cmd)
	}
	return unsafe.Add(i.data, off)
}

// pathCtxField is ctxField for a viaPath type: it walks the command's
// embedded fields to its baseCmd, through embedded pointers and embedded
// interfaces (nil on a nil one).
func pathCtxField(cmd redis.Cmder) unsafe.Pointer {
	v := reflect.ValueOf(cmd)
	for range maxHops {
		switch v.Kind() {
		case reflect.Interface, reflect.Pointer:
			if v.IsNil() {
				return nil
			}
			v = v.Elem()
			continue
		case reflect.Struct:
		default:
			return nil
		}
		t := v.Type()
		if t == baseCmdType {
			if !v.CanAddr() {
				return nil
			}
			return unsafe.Add(unsafe.Pointer(v.UnsafeAddr()), cmdCtxOffset)
		}
		p := pathOf(t)
		if p == nil {
			return nil
		}
		b, err := v.FieldByIndexErr(p.path)
		if err != nil {
			return nil
		}
		v = b
	}
	return nil
}

// pathOf returns the path of struct type t, found once by basePath.
func pathOf(t reflect.Type) *cmdPath {
	if p, ok := cmdPaths.Load(t); ok {
		return p.(*cmdPath)
	}
	p := basePath(t)
	cmdPaths.Store(t, p)
	return p
}

// learn finds where the context is in cmd's type and records it.
func learn(cmd redis.Cmder, tab unsafe.Pointer) uintptr {
	t := reflect.TypeOf(cmd)
	off := ctxOffset(t)
	if off == noCtx {
		st := t
		if st.Kind() == reflect.Pointer {
			st = st.Elem()
		}
		if st.Kind() == reflect.Struct && pathOf(st) != nil {
			off = viaPath
		}
	}
	cmdTypesMu.Lock()
	defer cmdTypesMu.Unlock()
	old := *cmdTypes.Load()
	m := make(map[unsafe.Pointer]uintptr, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[tab] = off
	cmdTypes.Store(&m)
	return off
}

// ctxOffset returns the offset of the context in a pointer to a go-redis
// command type, down its first embedded fields (HImportSetCmd embeds
// StatusCmd, which embeds baseCmd), or noCtx.
func ctxOffset(t reflect.Type) uintptr {
	if baseCmdType == nil || t == nil || t.Kind() != reflect.Pointer {
		return noCtx
	}
	e := t.Elem()
	var off uintptr
	for range 4 {
		if e == baseCmdType {
			return off + cmdCtxOffset
		}
		if e.Kind() != reflect.Struct || e.NumField() == 0 {
			return noCtx
		}
		f := e.Field(0)
		if !f.Anonymous {
			return noCtx
		}
		off += f.Offset
		e = f.Type
	}
	return noCtx
}

var cmderType = reflect.TypeFor[redis.Cmder]()

// basePath returns the path, from struct type t, to the baseCmd whose
// methods t has, or to the embedded interface (one that implements
// redis.Cmder) whose command's methods it has: the shallowest one down
// embedded fields, by value or by pointer (Go promotes the shallowest),
// or nil. A Cmder of the caller's must embed a go-redis command (Cmder has
// unexported methods), by value, by pointer or through an interface, so
// one is always there, however deep; ctxOffset finds those on the first
// embedded fields by value (all of go-redis's own) without it.
func basePath(t reflect.Type) *cmdPath {
	if baseCmdType == nil || t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	type node struct {
		t    reflect.Type
		path []int
	}
	seen := map[reflect.Type]bool{t: true}
	level := []node{{t, nil}}
	for len(level) > 0 {
		var next []node
		for _, n := range level {
			for j := range n.t.NumField() {
				f := n.t.Field(j)
				if !f.Anonymous {
					continue
				}
				path := append(append([]int(nil), n.path...), j)
				if f.Type.Kind() == reflect.Interface {
					if f.Type.Implements(cmderType) {
						return &cmdPath{path: path, iface: true}
					}
					continue
				}
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft == baseCmdType {
					return &cmdPath{path: path}
				}
				if ft.Kind() == reflect.Struct && !seen[ft] {
					seen[ft] = true
					next = append(next, node{ft, path})
				}
			}
		}
		level = next
	}
	return nil
}

// cmdArgsOffset is the offset of baseCmd's args field from its ctx field,
// or noCtx when baseCmd has no args field of type []any.
var cmdArgsOffset = func() uintptr {
	if baseCmdType == nil {
		return noCtx
	}
	f, ok := baseCmdType.FieldByName("args")
	if !ok || f.Type != reflect.TypeFor[[]any]() || len(f.Index) != 1 {
		return noCtx
	}
	return f.Offset - cmdCtxOffset
}()

// ownArgs gives cmd a copy of its arguments and returns it. go-redis keeps
// the slice a caller passes to Do (or Process) as the command's arguments
// and reads it again when it writes, so without a copy the caller could
// replace an argument between the check and the write (another goroutine
// setting args[1] of "SELECT <its database>" to production's). It reports
// false when cmd's Args is not its go-redis command's arguments (a type of
// the caller's that defines its own Args, which go-redis calls again when
// it writes): what is checked could then differ from what is written.
func ownArgs(cmd redis.Cmder) ([]any, bool) {
	args := cmd.Args()
	if cmdArgsOffset == noCtx {
		return args, true // go-redis changed: as before the copy
	}
	f := ctxField(cmd)
	if f == nil {
		return args, false
	}
	p := (*[]any)(unsafe.Add(f, cmdArgsOffset))
	if len(*p) != len(args) || len(args) > 0 && &(*p)[0] != &args[0] {
		return args, false
	}
	own := append([]any(nil), args...)
	*p = own
	return own, true
}

// cmdSandbox returns the sandbox of the context cmd was built with.
func cmdSandbox(cmd redis.Cmder) (propagation.Sandbox, bool) {
	if ctx := cmdContext(cmd); ctx != nil {
		return propagation.FromContext(ctx)
	}
	return propagation.Sandbox{}, false
}

// isTx reports whether cmds is a MULTI ... EXEC transaction as go-redis
// sends it.
func isTx(cmds []redis.Cmder) bool {
	return len(cmds) >= 2 && cmds[0].Name() == "multi" && cmds[len(cmds)-1].Name() == "exec"
}

// splitProduction handles the commands of a pipeline sent with a
// production context: when none was built with a sandbox's context it
// returns cmds as they are (no allocation); otherwise it sets err(s) on
// each sandbox command and returns the production ones, or nothing at all
// when cmds is a transaction (all of it fails: a transaction cannot run in
// part).
func splitProduction(cmds []redis.Cmder, refuse func(propagation.Sandbox) error) []redis.Cmder {
	first := -1
	for i, c := range cmds {
		if _, ok := cmdSandbox(c); ok {
			first = i
			break
		}
	}
	if first < 0 {
		return cmds
	}
	if isTx(cmds) {
		s, _ := cmdSandbox(cmds[first])
		err := refuse(s)
		for _, c := range cmds {
			c.SetErr(err)
		}
		return nil
	}
	prod := make([]redis.Cmder, 0, len(cmds)-1)
	for _, c := range cmds {
		if s, ok := cmdSandbox(c); ok {
			c.SetErr(refuse(s))
			continue
		}
		prod = append(prod, c)
	}
	return prod
}

// errCommandContexts is the error of New and Guard when this version of
// go-redis keeps commands' contexts where cmdContext cannot read them:
// without them, an AutoPipeliner would send sandbox commands as
// production ones.
func errCommandContexts(fn string) error {
	return fmt.Errorf("%w: redisroute: %s: this go-redis version does not keep a command's context where redisroute reads it (baseCmd.ctx); sandbox commands batched by an AutoPipeliner could not be told apart", ErrConfig, fn)
}

// privateCopy returns a copy of cmd, a command of go-redis's own layout
// (its baseCmd on its first embedded fields by value), that nobody else
// holds: the sandbox policy checks it and go-redis writes it, so that
// neither the caller overwriting its command (*cmd = *other) nor a wrapper
// swapping the command it holds between the check and the write changes
// what is written. A command that reaches its go-redis command through a
// pointer or an interface of its own (viaPath) is refused: the copy would
// share that command with the caller. A nil command is refused too.
func privateCopy(cmd redis.Cmder) (redis.Cmder, error) {
	v := reflect.ValueOf(cmd)
	if v.Kind() != reflect.Pointer || v.IsNil() || ctxOffset(v.Type()) == noCtx {
		return nil, fmt.Errorf("%w: a command of type %T, which holds its go-redis command through a pointer or an interface that its caller could swap between the check and the write: send the go-redis command itself", ErrRefused, cmd)
	}
	p := reflect.New(v.Type().Elem())
	p.Elem().Set(v.Elem())
	return p.Interface().(redis.Cmder), nil
}

// readyOffset is the offset of baseCmd's ready field from its ctx field
// (noCtx when there is none): the batch an asynchronous AutoPipeliner's
// caller awaits, read atomically by cmd.Err() while the command runs on
// another goroutine, so copyBack must not write it.
var readyOffset = func() uintptr {
	if baseCmdType == nil {
		return noCtx
	}
	f, ok := baseCmdType.FieldByName("ready")
	if !ok || len(f.Index) != 1 {
		return noCtx
	}
	return f.Offset - cmdCtxOffset
}()

// copyBack copies priv, the private copy of cmd that was written, into
// cmd: its reply, its error, and the arguments that were checked; every
// field but baseCmd's ready, which the copy shares and a caller of the
// asynchronous AutoPipeliner may be reading at the same time.
func copyBack(cmd, priv redis.Cmder) {
	dst, src := reflect.ValueOf(cmd).Elem(), reflect.ValueOf(priv).Elem()
	skip := unsafe.Pointer(nil)
	if f := ctxField(cmd); f != nil && readyOffset != noCtx {
		skip = unsafe.Add(f, readyOffset)
	}
	copyFields(unsafe.Pointer(dst.UnsafeAddr()), unsafe.Pointer(src.UnsafeAddr()), dst.Type(), skip)
}

// copyFields copies the struct of type t at src to dst field by field
// (with the write barriers reflect.Value.Set gives), all but the field at
// address skip in dst, looked for down the embedded structs that hold it.
func copyFields(dst, src unsafe.Pointer, t reflect.Type, skip unsafe.Pointer) {
	for i := range t.NumField() {
		f := t.Field(i)
		d, s := unsafe.Add(dst, f.Offset), unsafe.Add(src, f.Offset)
		if d == skip {
			continue
		}
		if f.Type.Kind() == reflect.Struct && uintptr(skip) > uintptr(d) && uintptr(skip) < uintptr(d)+f.Type.Size() {
			copyFields(d, s, f.Type, skip)
			continue
		}
		reflect.NewAt(f.Type, d).Elem().Set(reflect.NewAt(f.Type, s).Elem())
	}
}
