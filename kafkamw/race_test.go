//go:build race

package kafkamw

// raceEnabled: exact allocation counts are not asserted under the race
// detector, which allocates on its own.
const raceEnabled = true
