//go:build e2e

package e2e

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

func listOpts(service string) metav1.ListOptions {
	return metav1.ListOptions{LabelSelector: "serving.knative.dev/service=" + service}
}

func getOpts() metav1.GetOptions { return metav1.GetOptions{} }
