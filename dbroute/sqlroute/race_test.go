//go:build race

package sqlroute_test

// raceEnabled: the race detector drops sync.Pool items at random, so
// allocation counts are not exact under it.
const raceEnabled = true
