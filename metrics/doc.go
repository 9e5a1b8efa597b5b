// Package metrics owns rmqrouter's Prometheus registry and every collector.
//
// A *Metrics value is created once in main and passed to the packages that
// record; there are no package-level collectors, so tests create their own
// registry and read it. No label holds a user name, a queue name or another
// unbounded value: labels are routes, status codes, error codes, outcomes and
// actor kinds. Durations are in seconds.
package metrics
