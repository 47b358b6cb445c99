package kafkamw

import (
	"context"

	"github.com/segmentio/kafka-go"
)

// forwarder is the baseline reader's half of the split mode: it forwards
// each message a sandbox's reader owns to that sandbox's topic. A nil
// forwarder is the filter mode: the message is left where it is, for the
// sandbox's reader that reads the topic too.
type forwarder struct{}

// handOff forwards msg, of sandbox, and returns once the broker has
// acknowledged it; an error keeps the message, decided and forwarded
// again on the next fetch.
func (f *forwarder) handOff(ctx context.Context, msg *kafka.Message, sandbox string) error {
	if f == nil {
		return nil
	}
	return nil
}

// handover is a split-mode sandbox reader's record of the source offsets
// its group committed in the filter mode: the forwarded copies of those
// messages were processed already. nil when there is none.
type handover struct{}

// processed reports whether msg, forwarded, was processed by the
// filter-mode reader before.
func (h *handover) processed(msg *kafka.Message) bool {
	if h == nil {
		return false
	}
	return false
}
