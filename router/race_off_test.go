//go:build !race

package router

// raceEnabled is set when the tests run with the race detector, which adds
// allocations and makes sync.Pool drop items at random.
const raceEnabled = false
