// Package bench holds microvm's benchmarks. They print figures and assert
// nothing about time; docs/benchmarks.md records what they measured and the
// command that produced each figure.
package bench
