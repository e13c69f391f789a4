// Package deps pins the project's direct dependencies while packages are being written.
package deps

import (
	_ "github.com/google/go-containerregistry/pkg/v1/mutate"
	_ "github.com/gorilla/websocket"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/tsenart/vegeta/v12/lib"
	_ "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	_ "go.opentelemetry.io/otel"
	_ "go.opentelemetry.io/otel/sdk/trace"
	_ "go.uber.org/zap"
	_ "google.golang.org/grpc"
	_ "google.golang.org/protobuf/encoding/protowire"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/utils/clock"
	_ "knative.dev/networking/pkg/apis/networking/v1alpha1"
	_ "knative.dev/pkg/apis"
	_ "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	_ "knative.dev/serving/pkg/apis/serving/v1"
	_ "knative.dev/serving/pkg/autoscaler/aggregation"
	_ "knative.dev/serving/pkg/autoscaler/config"
	_ "knative.dev/serving/pkg/autoscaler/metrics"
	_ "knative.dev/serving/pkg/autoscaler/scaling"
	_ "knative.dev/serving/pkg/client/clientset/versioned"
	_ "sigs.k8s.io/yaml"
)
