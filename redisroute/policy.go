package redisroute

import (
	"encoding"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// family is one command family of the go-redis API and what a sandbox may
// do with it. The package doc lists the same families; a test checks every
// command of every family against the real server.
type family struct {
	name     string
	isolated bool // true: runs in the sandbox's database; false: refused
	cmds     []string
}

// families are the command families, by the server's command names
// (lowercase). A command in no family is refused: fail closed.
var families = []family{
	{"strings", true, []string{"append", "decr", "decrby", "get", "getdel", "getex", "getrange", "getset", "incr", "incrby", "incrbyfloat", "lcs", "mget", "mset", "msetnx", "psetex", "set", "setex", "setnx", "setrange", "strlen", "substr"}},
	{"bitmaps", true, []string{"bitcount", "bitfield", "bitfield_ro", "bitop", "bitpos", "getbit", "setbit"}},
	{"lists", true, []string{"lindex", "linsert", "llen", "lmove", "lmpop", "lpop", "lpos", "lpush", "lpushx", "lrange", "lrem", "lset", "ltrim", "rpop", "rpoplpush", "rpush", "rpushx"}},
	{"blocking", true, []string{"blmove", "blmpop", "blpop", "brpop", "brpoplpush", "bzmpop", "bzpopmax", "bzpopmin"}},
	{"hashes", true, []string{"hdel", "hexists", "hexpire", "hexpireat", "hexpiretime", "hget", "hgetall", "hgetdel", "hgetex", "hincrby", "hincrbyfloat", "hkeys", "hlen", "hmget", "hmset", "hpersist", "hpexpire", "hpexpireat", "hpexpiretime", "hpttl", "hrandfield", "hscan", "hset", "hsetex", "hsetnx", "hstrlen", "httl", "hvals"}},
	{"sets", true, []string{"sadd", "scard", "sdiff", "sdiffstore", "sinter", "sintercard", "sinterstore", "sismember", "smembers", "smismember", "smove", "spop", "srandmember", "srem", "sscan", "sunion", "sunionstore"}},
	{"sorted sets", true, []string{"zadd", "zcard", "zcount", "zdiff", "zdiffstore", "zincrby", "zinter", "zintercard", "zinterstore", "zlexcount", "zmpop", "zmscore", "zpopmax", "zpopmin", "zrandmember", "zrange", "zrangebylex", "zrangebyscore", "zrangestore", "zrank", "zrem", "zremrangebylex", "zremrangebyrank", "zremrangebyscore", "zrevrange", "zrevrangebylex", "zrevrangebyscore", "zrevrank", "zscan", "zscore", "zunion", "zunionstore"}},
	{"streams", true, []string{"xack", "xadd", "xautoclaim", "xclaim", "xdel", "xgroup", "xinfo", "xlen", "xpending", "xrange", "xread", "xreadgroup", "xrevrange", "xsetid", "xtrim"}},
	{"hyperloglog", true, []string{"pfadd", "pfcount", "pfmerge"}},
	{"geo", true, []string{"geoadd", "geodist", "geohash", "geopos", "georadius", "georadius_ro", "georadiusbymember", "georadiusbymember_ro", "geosearch", "geosearchstore"}},
	{"keys", true, []string{"copy", "dbsize", "del", "dump", "exists", "expire", "expireat", "expiretime", "keys", "object", "persist", "pexpire", "pexpireat", "pexpiretime", "pttl", "randomkey", "rename", "renamenx", "restore", "scan", "sort", "sort_ro", "touch", "ttl", "type", "unlink"}},
	{"transactions", true, []string{"discard", "exec", "multi", "unwatch", "watch"}},
	{"connection", true, []string{"auth", "client", "echo", "hello", "ping", "select"}},
	{"pub/sub", false, []string{"psubscribe", "publish", "pubsub", "punsubscribe", "spublish", "ssubscribe", "subscribe", "sunsubscribe", "unsubscribe"}},
	{"scripting and functions", false, []string{"eval", "eval_ro", "evalsha", "evalsha_ro", "fcall", "fcall_ro", "function", "script"}},
	{"other databases", false, []string{"migrate", "move", "reset", "swapdb"}},
	{"server", false, []string{"acl", "bgrewriteaof", "bgsave", "command", "config", "debug", "failover", "flushall", "flushdb", "info", "lastsave", "latency", "lolwut", "memory", "module", "monitor", "psync", "replconf", "replicaof", "save", "shutdown", "slaveof", "slowlog", "sync", "time", "wait", "waitaof"}},
	{"cluster", false, []string{"asking", "cluster", "readonly", "readwrite"}},
}

// verdict is what the sandbox policy does with a command.
type verdict uint8

const (
	refuse  verdict = iota // not in any isolated family
	allow                  // runs in the sandbox's database as it is
	inspect                // allowed with some arguments only (copy, select, client)
)

var verdicts = func() map[string]verdict {
	m := make(map[string]verdict)
	for _, f := range families {
		for _, c := range f.cmds {
			if f.isolated {
				m[c] = allow
			} else {
				m[c] = refuse
			}
		}
	}
	for _, c := range [...]string{"copy", "select", "client"} {
		m[c] = inspect
	}
	return m
}()

// clientSubcommands are the CLIENT subcommands a sandbox connection may
// send: go-redis sends SETINFO (and MAINT_NOTIFICATIONS) when it connects;
// the others only name or describe the connection itself.
var clientSubcommands = map[string]bool{"setinfo": true, "setname": true, "getname": true, "id": true, "maint_notifications": true}

// arg returns args[i] as go-redis writes it to the server (its
// internal/proto Writer.WriteArg), for the types whose text can be a
// command name, a key or a database number: a *string as its string, a
// BinaryMarshaler as its bytes, a bool as 1 or 0. Other numbers read the
// same with fmt.Sprint; a type go-redis cannot write is not sent at all.
func arg(args []any, i int) string {
	switch v := args[i].(type) {
	case string:
		return v
	case *string:
		if v == nil {
			return ""
		}
		return *v
	case []byte:
		return string(v)
	case nil:
		return ""
	case bool:
		if v {
			return "1"
		}
		return "0"
	case *bool:
		if v != nil && *v {
			return "1"
		}
		return "0"
	// Numbers as internal/proto Writer.int, uint and float format them (and
	// without fmt, whose printer cache may allocate).
	case int:
		return strconv.Itoa(v)
	case int8:
		return strconv.FormatInt(int64(v), 10)
	case int16:
		return strconv.FormatInt(int64(v), 10)
	case int32:
		return strconv.FormatInt(int64(v), 10)
	case int64:
		return strconv.FormatInt(v, 10)
	case uint:
		return strconv.FormatUint(uint64(v), 10)
	case uint8:
		return strconv.FormatUint(uint64(v), 10)
	case uint16:
		return strconv.FormatUint(uint64(v), 10)
	case uint32:
		return strconv.FormatUint(uint64(v), 10)
	case uint64:
		return strconv.FormatUint(v, 10)
	case uintptr:
		return strconv.FormatUint(uint64(v), 10)
	case float32:
		return strconv.FormatFloat(float64(v), 'f', -1, 64)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case *int:
		if v == nil {
			return "0"
		}
		return strconv.Itoa(*v)
	case time.Time, *time.Time, time.Duration, *time.Duration:
		return "" // never a command name, the marker or a database number
	case encoding.BinaryMarshaler:
		b, err := v.MarshalBinary()
		if err != nil {
			return ""
		}
		return string(b)
	case net.IP:
		return string(v)
	default:
		// Pointers to other numbers: never the marker; as a database
		// number, fmt.Sprint gives an address, which fails closed.
		return fmt.Sprint(v)
	}
}

// wireName is cmd's name as go-redis writes it, lowercase ("" for an empty
// command): cmd.Name() is "" for a name given as an
// encoding.BinaryMarshaler.
func wireName(cmd redis.Cmder) string {
	args := cmd.Args()
	if len(args) == 0 {
		return ""
	}
	return strings.ToLower(arg(args, 0))
}

// check returns nil when cmd runs inside database db and touches only
// keys a sandbox owns, and an error wrapping ErrRefused otherwise.
func check(cmd redis.Cmder, db int) error {
	args, ok := ownArgs(cmd)
	if !ok {
		return fmt.Errorf("%w: a command of type %T, whose Args are not those of the go-redis command it embeds: go-redis reads them again when it writes, so what the policy checks could differ from what is written", ErrRefused, cmd)
	}
	if len(args) == 0 {
		return fmt.Errorf("%w: empty command", ErrRefused)
	}
	if err := freeze(args, false); err != nil {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	name := strings.ToLower(arg(args, 0))
	switch verdicts[name] {
	case refuse:
		return fmt.Errorf("%w: %s: %s", ErrRefused, name, why(name))
	case inspect:
		if err := inspectArgs(name, args, db); err != nil {
			return err
		}
	}
	for i := 1; i < len(args); i++ {
		if arg(args, i) == MarkerKey {
			return fmt.Errorf("%w: %s names %s, the key that marks the sandbox's database", ErrRefused, name, MarkerKey)
		}
	}
	return nil
}

// freeze replaces, in place, each argument whose text could change between
// the check and the write with what go-redis would write now: a *string by
// its string, a pointer to a number, a bool, a time.Time or a
// time.Duration by its value (go-redis reads the pointer again when it
// writes), an encoding.BinaryMarshaler by its bytes. A marshaler that
// answered "get" to the policy and "flushdb" to the writer, or a *string
// or *int changed by another goroutine in between ("SELECT <its own
// database>" checked, "SELECT <another>" written), would otherwise send a
// command the check never saw. The bytes are the same as go-redis writes
// (internal/proto Writer.WriteArg); a nil pointer is the zero value, as
// go-redis writes it.
//
// A []byte or net.IP argument is replaced by a copy of its bytes, which
// the caller still holds and go-redis reads when it writes: "SELECT
// <its own database>" as []byte, a digit changed after the check, moved a
// pooled sandbox connection to production's database, and a key one byte
// off the marker, changed after the check, deleted the marker
// (TestByteArgumentsCannotChangeAfterTheCheck). Without allBytes, only
// the name and arguments short enough to read as something a check looks
// for (mayMatter) are copied, so a sandbox's large values are not.
func freeze(args []any, allBytes bool) error {
	for i, a := range args {
		switch v := a.(type) {
		case string, nil, int, int64, float64, bool, time.Time, time.Duration:
		case []byte:
			if allBytes || i == 0 || mayMatter(len(v)) {
				args[i] = clone(v)
			}
		case net.IP:
			if allBytes || i == 0 || mayMatter(len(v)) {
				args[i] = clone([]byte(v))
			}
		case *string:
			args[i] = deref(v)
		case *int:
			args[i] = deref(v)
		case *int8:
			args[i] = deref(v)
		case *int16:
			args[i] = deref(v)
		case *int32:
			args[i] = deref(v)
		case *int64:
			args[i] = deref(v)
		case *uint:
			args[i] = deref(v)
		case *uint8:
			args[i] = deref(v)
		case *uint16:
			args[i] = deref(v)
		case *uint32:
			args[i] = deref(v)
		case *uint64:
			args[i] = deref(v)
		case *uintptr:
			args[i] = deref(v)
		case *float32:
			args[i] = deref(v)
		case *float64:
			args[i] = deref(v)
		case *bool:
			args[i] = deref(v)
		case *time.Time:
			args[i] = deref(v)
		case *time.Duration:
			args[i] = deref(v)
		case encoding.BinaryMarshaler:
			b, err := v.MarshalBinary()
			if err != nil {
				return fmt.Errorf("argument %d: %w", i, err)
			}
			args[i] = b
		}
	}
	return nil
}

// maxShortArg is the length of the longest argument text the policy
// compares with anything but the marker: a database number (at most 20
// digits), a CLIENT subcommand ("maint_notifications"), COPY's DB.
const maxShortArg = 32

// mayMatter reports whether a byte argument of length n could read as
// something the sandbox policy looks for: the marker key, a database
// number, a subcommand. A longer one, whatever its bytes become, reads as
// none of them (its length is fixed once the arguments are copied), so
// its bytes need no copy: a large value costs no second buffer.
func mayMatter(n int) bool { return n <= maxShortArg || n == len(MarkerKey) }

// clone is a copy of b (nil stays nil: go-redis writes both as "").
func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

// deref is *p, or the zero value for a nil p.
func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

func inspectArgs(name string, args []any, db int) error {
	switch name {
	case "select":
		// go-redis selects the sandbox's database when it connects.
		if len(args) == 2 && arg(args, 1) == strconv.Itoa(db) {
			return nil
		}
		return fmt.Errorf("%w: select: a sandbox stays in its own database", ErrRefused)
	case "copy":
		// go-redis always sends DB: the sandbox's own is fine.
		for i := 3; i < len(args); i++ {
			if strings.EqualFold(arg(args, i), "db") && (i+1 == len(args) || arg(args, i+1) != strconv.Itoa(db)) {
				return fmt.Errorf("%w: copy to another database: a sandbox stays in its own database", ErrRefused)
			}
		}
		return nil
	case "client":
		if len(args) >= 2 && clientSubcommands[strings.ToLower(arg(args, 1))] {
			return nil
		}
		return fmt.Errorf("%w: client: only SETINFO, SETNAME, GETNAME, ID and MAINT_NOTIFICATIONS concern the connection alone", ErrRefused)
	}
	return nil
}

// why says why a refused command is refused.
func why(name string) string {
	for _, f := range families {
		for _, c := range f.cmds {
			if c == name {
				switch f.name {
				case "pub/sub":
					return "channels are shared by every database of the server"
				case "scripting and functions":
					return "a script may SELECT another database, and functions are shared by every database"
				case "other databases":
					return "it reaches another database or resets the connection's"
				case "server":
					return "it acts on the whole server"
				case "cluster":
					return "cluster commands are not isolated"
				}
			}
		}
	}
	return "not in any command family isolated for sandboxes (fail closed)"
}
