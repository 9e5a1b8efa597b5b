package transport_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine of a channel,
// consumer or connection running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
