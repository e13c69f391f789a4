package asconfig

import (
	"go.uber.org/zap"

	"github.com/thaw-dev/thaw/pkg/cmwatch"
)

// NewAutoscalerStore is a cmwatch.Store of config-autoscaler.
func NewAutoscalerStore(logger *zap.SugaredLogger) *cmwatch.Store[Config] {
	s, err := cmwatch.NewStore(ConfigName, NewConfigFromMap, logger)
	if err != nil {
		panic(err) // the defaults are constants: unreachable unless this package is broken
	}
	return s
}

// NewDeploymentStore is a cmwatch.Store of config-deployment.
func NewDeploymentStore(logger *zap.SugaredLogger) *cmwatch.Store[DeploymentConfig] {
	s, err := cmwatch.NewStore(DeploymentConfigName, NewDeploymentConfigFromMap, logger)
	if err != nil {
		panic(err)
	}
	return s
}
