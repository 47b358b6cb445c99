//go:build !race

package sqlroute_test

const raceEnabled = false
