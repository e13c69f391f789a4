package asconfig

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// DeploymentConfigName is the ConfigMap whose progress-deadline bounds how long a scale-up may take
// before the autoscaler gives up and scales the revision to zero.
const DeploymentConfigName = "config-deployment"

// Keys of config-deployment read here; the camelCase one is the legacy spelling and loses to the other.
const (
	KeyProgressDeadline       = "progress-deadline"
	legacyKeyProgressDeadline = "progressDeadline"
)

// DefaultProgressDeadline matches Kubernetes' Deployment default.
const DefaultProgressDeadline = 600 * time.Second

// DeploymentConfig is the part of config-deployment the autoscaler uses. Other keys are the controller's
// business and are ignored.
type DeploymentConfig struct {
	ProgressDeadline time.Duration
}

// NewDeploymentConfigFromMap parses the data of config-deployment.
func NewDeploymentConfigFromMap(data map[string]string) (*DeploymentConfig, error) {
	c := &DeploymentConfig{ProgressDeadline: DefaultProgressDeadline}
	const want = "a duration > 0 in whole seconds"
	p := parser{data: data}
	p.duration(legacyKeyProgressDeadline, &c.ProgressDeadline, want)
	key := legacyKeyProgressDeadline
	if _, ok := data[KeyProgressDeadline]; ok {
		key = KeyProgressDeadline
		p.duration(KeyProgressDeadline, &c.ProgressDeadline, want)
	}
	if p.err != nil {
		return nil, fmt.Errorf("%s: %w", DeploymentConfigName, p.err)
	}
	if c.ProgressDeadline <= 0 || c.ProgressDeadline.Truncate(time.Second) != c.ProgressDeadline {
		return nil, fmt.Errorf("%s: %w", DeploymentConfigName, &ValueError{Key: key, Value: data[key], Want: want})
	}
	return c, nil
}

// NewDeploymentConfigFromConfigMap parses config-deployment.
func NewDeploymentConfigFromConfigMap(cm *corev1.ConfigMap) (*DeploymentConfig, error) {
	return NewDeploymentConfigFromMap(cm.Data)
}
