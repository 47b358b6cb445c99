//go:build race

package nested

const raceEnabled = true
