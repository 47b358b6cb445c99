package etcdroutes

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Marshal returns the value stored under a sandbox's key: its JSON object
// as in a route document. It fails when sb is not valid
// ([routes.Validate]).
func Marshal(sb routes.Sandbox) ([]byte, error) {
	if err := routes.Validate([]routes.Sandbox{sb}); err != nil {
		return nil, err
	}
	return json.Marshal(sb)
}

// Unmarshal reads the value of the key of sandbox id as strictly as
// [routes.ParseDocument] reads a sandbox of a document, and checks that it
// describes sandbox id. Errors wrap [routes.ErrInvalid].
func Unmarshal(id string, value []byte) (routes.Sandbox, error) {
	if err := propagation.ValidateID(id); err != nil {
		return routes.Sandbox{}, fmt.Errorf("%w: key names %q: %w", routes.ErrInvalid, id, err)
	}
	// A value is one element of a document's list; anything that would
	// make more of it (a second element, a closing bracket) leaves a
	// document ParseDocument rejects or one that holds more than one
	// sandbox.
	doc := make([]byte, 0, len(value)+len(docHead)+len(docTail))
	doc = append(append(append(doc, docHead...), bytes.TrimSpace(value)...), docTail...)
	sbs, err := routes.ParseDocument(doc)
	if err != nil {
		return routes.Sandbox{}, fmt.Errorf("sandbox %q: %w", id, err)
	}
	if len(sbs) != 1 {
		return routes.Sandbox{}, fmt.Errorf("%w: sandbox %q: the value holds %d sandboxes, want one object", routes.ErrInvalid, id, len(sbs))
	}
	if sbs[0].ID != id {
		return routes.Sandbox{}, fmt.Errorf("%w: sandbox %q: the value is sandbox %q", routes.ErrInvalid, id, sbs[0].ID)
	}
	return sbs[0], nil
}

const (
	docHead = `{"sandboxes":[`
	docTail = `]}`
)
