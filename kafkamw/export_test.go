package kafkamw

import "context"

// Crash stops r as a killed process would: its group reader leaves the
// group without committing anything more (neither the skipped messages
// nor the forwarded ones), and its forwarder's connections are dropped.
// r is closed afterwards.
func Crash(r *Reader) {
	r.startMu.Lock()
	defer r.startMu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	if r.metrics != nil {
		r.metrics.Unregister()
	}
	r.forward.close()
	if in := r.inner.Load(); in != nil {
		r.stop()
		<-r.flushed
		in.Close()
		r.inner.Store(nil) // a killed process reads nothing more
	}
}

// FlushForwards writes r's buffered split-mode copies, as its next commit
// would.
func FlushForwards(r *Reader) error { return r.flushForwards(context.Background()) }
