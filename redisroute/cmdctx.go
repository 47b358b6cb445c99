package redisroute

import (
	"context"
	"fmt"
	"reflect"
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
// unexported baseCmd as its first field, and baseCmd holds the context in
// a field named ctx, found once here; a command of
// another shape (a Cmder implemented outside go-redis) has no readable
// context and is judged by the hook's context alone.
var baseCmdType, cmdCtxIndex = func() (reflect.Type, int) {
	t := reflect.TypeFor[redis.StatusCmd]()
	if t.NumField() == 0 || !t.Field(0).Anonymous {
		return nil, -1
	}
	base := t.Field(0).Type
	if base.Kind() != reflect.Struct {
		return nil, -1
	}
	f, ok := base.FieldByName("ctx")
	if !ok || f.Type != reflect.TypeFor[context.Context]() || len(f.Index) != 1 {
		return nil, -1
	}
	return base, f.Index[0]
}()

// cmdContext returns the context cmd was built with, or nil.
func cmdContext(cmd redis.Cmder) context.Context {
	if baseCmdType == nil {
		return nil
	}
	v := reflect.ValueOf(cmd)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return nil
	}
	// Down the first embedded fields: HImportSetCmd embeds StatusCmd,
	// which embeds baseCmd.
	e := v.Elem()
	for range 4 {
		if e.Kind() != reflect.Struct || e.NumField() == 0 {
			return nil
		}
		if e.Type() == baseCmdType {
			return *(*context.Context)(unsafe.Pointer(e.Field(cmdCtxIndex).UnsafeAddr()))
		}
		e = e.Field(0)
	}
	return nil
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
