// Package lab runs Thaw-vs-upstream benchmarks on the lab cluster: upstream's dataplane-probe and
// load-test scaled to a small machine, and the activator's RSS under overload. Each benchmark runs
// with upstream's activator and autoscaler, then with Thaw's swapped in, in the same run, and the
// report puts them side by side with ratios Thaw/upstream.
//
// The lab benchmarks carry the build tag e2e and run only as root with THAW_PERF_LAB=1 (see
// README.md here), so `go test ./...` never touches the lab; without them only the report helpers
// in this file set are built and tested.
package lab
