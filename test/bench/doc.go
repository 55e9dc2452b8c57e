// Package bench holds Go benchmarks that measure the worker's connection
// as a whole: a coordinator.Server running in the benchmark process on
// 127.0.0.1, the dtf-reconnection plugin binary launched through go-plugin
// as the worker host launches it, and a test/faultproxy between them.
//
// The benchmarks report custom metrics, such as worker-detect-ms and
// raw-frames/s, next to ns/op. ns/op itself is the length of one whole
// iteration, which includes setup and recovery, so it is not the figure of
// interest. Run them with
//
//	go test -run '^$' -bench . -benchtime 5x ./test/bench/
//
// The package has no code outside its tests.
package bench
