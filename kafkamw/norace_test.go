//go:build !race

package kafkamw

const raceEnabled = false
