// Package e2e is the lab suite: it brings the lab cluster up and runs upstream's scenarios on it.
// Its tests carry the build tag e2e (see README.md here); without the tag the package is empty.
package e2e
