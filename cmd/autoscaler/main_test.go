package main

import (
	"context"
	"testing"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	fakekube "k8s.io/client-go/kubernetes/fake"

	"github.com/thaw-dev/thaw/pkg/autoscaler/lifecycle"
)

const sysNS = "knative-serving"

func TestNewLogger(t *testing.T) {
	for _, tc := range []struct {
		name string
		data map[string]string // nil: no ConfigMap
		want zapcore.Level
	}{
		{"no ConfigMap", nil, zapcore.InfoLevel},
		{"component level", map[string]string{"loglevel.autoscaler": "debug"}, zapcore.DebugLevel},
		{"other component", map[string]string{"loglevel.activator": "debug"}, zapcore.InfoLevel},
		{"zap config level", map[string]string{"zap-logger-config": `{"level":"warn","encoding":"json","outputPaths":["stderr"]}`}, zapcore.WarnLevel},
		{"garbage", map[string]string{"loglevel.autoscaler": "loud"}, zapcore.InfoLevel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kube := fakekube.NewSimpleClientset()
			if tc.data != nil {
				kube = fakekube.NewSimpleClientset(&corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Namespace: sysNS, Name: "config-logging"}, Data: tc.data})
			}
			_, level := newLogger(context.Background(), kube, config{Config: lifecycle.Config{Namespace: sysNS, LoggingName: "config-logging"}})
			if got := level.Level(); got != tc.want {
				t.Errorf("level = %v, want %v", got, tc.want)
			}
		})
	}
}
