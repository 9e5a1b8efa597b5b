package router_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves goroutines behind.
// Ignored are process-wide goroutines of the libraries: memguard's key
// rotation, fasthttp's date updater, and fasthttp's worker-pool cleaner,
// which notices a stopped server only after its sleep of up to 10 s.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/awnumar/memguard/core.NewCoffer.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	)
}
