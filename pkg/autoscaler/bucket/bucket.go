// Package bucket is the autoscaler's sharding: how many buckets there are, which bucket a revision
// belongs to, which Lease each bucket is, and which buckets this replica holds.
//
// Names, identity and hashing are upstream's, so that a fleet mixing upstream's replicas and Thaw's
// during a rolling update agrees on every key's owner: Leases `autoscaler-bucket-XX-of-YY` in the
// system namespace, held by `<POD_NAME>_<POD_IP>`, key → bucket by knative.dev/pkg's hash.BucketSet.
package bucket

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"knative.dev/pkg/hash"
	kle "knative.dev/pkg/leaderelection"
)

// Prefix starts every bucket's name, Lease and Service.
const Prefix = "autoscaler-bucket"

// ConfigMapName is the ConfigMap that sets the number of buckets and the Lease timings.
const ConfigMapName = "config-leader-election"

// MaxBuckets is knative.dev/pkg's bound (leaderelection.MaxBuckets).
const MaxBuckets = 10

// Name is the name of bucket ordinal of total, e.g. autoscaler-bucket-03-of-10.
func Name(ordinal, total uint32) string {
	return fmt.Sprintf("%s-%02d-of-%02d", Prefix, ordinal, total)
}

// Names lists the bucket names of a set of total buckets, in ordinal order.
func Names(total uint32) []string {
	out := make([]string, total)
	for i := range total {
		out[i] = Name(i, total)
	}
	return out
}

// IsBucketHost reports whether a Host header names a bucket Service (as upstream's check).
func IsBucketHost(host string) bool { return strings.HasPrefix(host, Prefix) }

// Identity is the Lease holder identity of a replica.
func Identity(podName, podIP string) string { return podName + "_" + podIP }

// HolderIP is the IP part of a Lease holder identity; false when it has none.
func HolderIP(identity string) (string, bool) {
	_, ip, ok := strings.Cut(identity, "_")
	if !ok || net.ParseIP(ip) == nil {
		return "", false
	}
	return ip, true
}

// Set maps keys to buckets. It is safe for concurrent use.
type Set struct {
	names []string
	set   *hash.BucketSet
}

// NewSet returns the set of total buckets.
func NewSet(total uint32) *Set {
	names := Names(total)
	return &Set{names: names, set: hash.NewBucketSet(sets.New(names...))}
}

// Names lists the set's buckets in ordinal order.
func (s *Set) Names() []string { return s.names }

// Owner returns the bucket of key (namespace/name), as upstream's BucketSet.Owner.
func (s *Set) Owner(key types.NamespacedName) string { return s.set.Owner(key.String()) }

// Has reports whether name is one of the set's buckets.
func (s *Set) Has(name string) bool { return s.set.HasBucket(name) }

// Config is what config-leader-election says about the autoscaler.
type Config struct {
	Buckets                                   uint32
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// DefaultConfig is upstream's (knative.dev/pkg leaderelection).
var DefaultConfig = Config{Buckets: 1, LeaseDuration: 60 * time.Second, RenewDeadline: 40 * time.Second,
	RetryPeriod: 10 * time.Second}

// ConfigFromMap parses config-leader-election. Invalid values are an error naming them; the caller
// keeps the last good config (at start, the defaults), as upstream's validation does.
func ConfigFromMap(data map[string]string) (Config, error) {
	c, err := kle.NewConfigFromMap(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", ConfigMapName, err)
	}
	out := Config{Buckets: c.Buckets, LeaseDuration: c.LeaseDuration, RenewDeadline: c.RenewDeadline,
		RetryPeriod: c.RetryPeriod}
	if err := out.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", ConfigMapName, err)
	}
	return out, nil
}

// Validate applies client-go's constraints on the timings and the bucket bounds, so that a bad
// ConfigMap is a log line rather than a panic in the elector.
func (c Config) Validate() error {
	if c.Buckets < 1 || c.Buckets > MaxBuckets {
		return fmt.Errorf("buckets: %d is not in [1, %d]", c.Buckets, MaxBuckets)
	}
	if c.RetryPeriod <= 0 || c.RenewDeadline <= time.Duration(leaderelection.JitterFactor*float64(c.RetryPeriod)) ||
		c.LeaseDuration <= c.RenewDeadline {
		return fmt.Errorf("need lease-duration > renew-deadline > %.1f×retry-period > 0, have %v, %v, %v",
			leaderelection.JitterFactor, c.LeaseDuration, c.RenewDeadline, c.RetryPeriod)
	}
	return nil
}

// ReadConfig reads config-leader-election once, as upstream does at start. A missing ConfigMap gives
// the defaults; an unreadable or invalid one gives the defaults and one log line.
func ReadConfig(ctx context.Context, kube kubernetes.Interface, ns string, logger *zap.SugaredLogger) Config {
	cm, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, ConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return DefaultConfig
	}
	if err != nil {
		logger.Warnw("Cannot read "+ConfigMapName+"; using the defaults", zap.Error(err))
		return DefaultConfig
	}
	c, err := ConfigFromMap(cm.Data)
	if err != nil {
		logger.Errorw("Invalid "+ConfigMapName+"; using the defaults", zap.Error(err))
		return DefaultConfig
	}
	return c
}

// ErrLoopbackIP: a loopback POD_IP would name an address no other replica can reach.
var ErrLoopbackIP = errors.New("POD_IP is a loopback address; the Lease holder identity must be the pod's routable IP")
