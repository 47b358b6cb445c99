package provision

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// maxIdentLen is PostgreSQL's identifier limit (NAMEDATALEN-1). Longer
// names are silently truncated by the server, which could make two
// sandboxes share a database, so names are built to fit.
const maxIdentLen = 63

// hashSuffixLen is the length of the "_" + 16 hex digits that end the name
// of a sandbox whose ID does not fit.
const hashSuffixLen = 17

// objectName is the database or schema name of sandbox id:
//
//   - prefix + id with '-' replaced by '_', when that is at most 62 bytes
//     (IDs are lower-case letters, digits and '-', so the mapping is
//     one-to-one);
//   - otherwise exactly 63 bytes: prefix + the start of that string + '_' +
//     the first 16 hex digits of SHA-256(id).
//
// The two forms never collide (their lengths differ); two long IDs share a
// name only if they share their start and 64 bits of SHA-256, and even then
// the marker comment, which holds the full ID, makes the second one fail
// with [dbroute.ErrNotOwned] instead of sharing the first one's data.
func objectName(prefix, id string) string {
	s := strings.ReplaceAll(id, "-", "_")
	if len(prefix)+len(s) < maxIdentLen {
		return prefix + s
	}
	sum := sha256.Sum256([]byte(id))
	k := maxIdentLen - len(prefix) - hashSuffixLen
	return prefix + s[:k] + "_" + hex.EncodeToString(sum[:8])
}

// producible reports whether name is one objectName returns for some
// valid ID under prefix: what an unmarked object must be called to be
// taken for an interrupted creation of the provisioner's.
func producible(prefix, name string) bool {
	if idOf(prefix, name) != "" {
		return true
	}
	k := maxIdentLen - hashSuffixLen
	if len(name) != maxIdentLen || !strings.HasPrefix(name, prefix) || name[k] != '_' {
		return false
	}
	start, sum := name[len(prefix):k], name[k+1:]
	for i := 0; i < len(start); i++ {
		if c := start[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' && i > 0) {
			return false
		}
	}
	for i := 0; i < len(sum); i++ {
		if c := sum[i]; !('a' <= c && c <= 'f' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// templateName cannot be the name of a sandbox: after the prefix, sandbox
// names start with a letter or digit.
func templateName(prefix string) string { return prefix + "_template" }

func validatePrefix(p string) error {
	if p == "" || len(p) > MaxPrefixLen || p[0] < 'a' || p[0] > 'z' {
		return fmt.Errorf("provision: WithPrefix(%q): want 1 to %d bytes starting with a lower-case letter: %w", p, MaxPrefixLen, dbroute.ErrConfig)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return fmt.Errorf("provision: WithPrefix(%q): want lower-case letters, digits and '_': %w", p, dbroute.ErrConfig)
		}
	}
	return nil
}

// Marker comments. Only an object whose comment is exactly the marker the
// library would write for its name is considered the library's.
const (
	markerPrefix        = "sandboxkit/dbroute "
	markerSandbox       = markerPrefix + "sandbox="
	markerTemplate      = markerPrefix + "template version="
	markerTemplateBuild = markerPrefix + "template building"
)

func sandboxMarker(id string, created time.Time) string {
	return markerSandbox + strconv.Quote(id) + " created=" + created.UTC().Format(time.RFC3339)
}

func templateMarker(version string) string { return markerTemplate + strconv.Quote(version) }

// parseSandboxMarker returns the sandbox ID and creation time in comment,
// and false when comment is not exactly a sandbox marker.
func parseSandboxMarker(comment string) (id string, created time.Time, ok bool) {
	rest, ok := strings.CutPrefix(comment, markerSandbox)
	if !ok {
		return "", time.Time{}, false
	}
	q, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return "", time.Time{}, false
	}
	if id, err = strconv.Unquote(q); err != nil || propagation.ValidateID(id) != nil {
		return "", time.Time{}, false
	}
	ts, ok := strings.CutPrefix(rest[len(q):], " created=")
	if !ok {
		return "", time.Time{}, false
	}
	if created, err = time.Parse(time.RFC3339, ts); err != nil || sandboxMarker(id, created) != comment {
		return "", time.Time{}, false
	}
	return id, created, true
}

// owner returns the sandbox a database or schema called name belongs to,
// if the library created it: its comment is a sandbox marker and name is
// exactly the name the library derives from that sandbox's ID.
func owner(prefix, name, comment string) (id string, created time.Time, ok bool) {
	if !strings.HasPrefix(name, prefix) {
		return "", time.Time{}, false
	}
	id, created, ok = parseSandboxMarker(comment)
	if !ok || objectName(prefix, id) != name {
		return "", time.Time{}, false
	}
	return id, created, true
}

func quoteIdent(name string) string { return pgx.Identifier{name}.Sanitize() }

// quoteLiteral quotes s as an SQL string literal, for statements that take
// no parameters (COMMENT ON).
func quoteLiteral(s string) string {
	s = strings.ReplaceAll(s, `'`, `''`)
	if strings.Contains(s, `\`) {
		return `E'` + strings.ReplaceAll(s, `\`, `\\`) + `'`
	}
	return `'` + s + `'`
}

// lockClass is the first key of every advisory lock the providers take, so
// they do not collide with the application's one-key advisory locks.
const lockClass = 0x5b0d_b000

// lockKey is the second key of the advisory lock that serialises work on
// the object called name. Two names sharing a key only wait for each other.
func lockKey(name string) int32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int32(h.Sum32())
}
