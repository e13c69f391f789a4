// Package core benchmarks the autoscaler's core (windows, collector, decider,
// multiscaler) against upstream Knative Serving's packages in the same run.
// Benchmarks come in pairs named impl=thaw and impl=upstream so that benchstat
// can compare them:
//
//	go test -run '^$' -bench . -count 6 ./perf/core | tee new.txt
//	benchstat -col /impl new.txt
package core
