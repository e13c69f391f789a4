// Package archtest holds no code: its test keeps the import rules that
// docs/ARCHITECTURE.md states true, by reading the module's import graph
// from the go tool.
package archtest
