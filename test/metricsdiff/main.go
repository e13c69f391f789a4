// Command metricsdiff compares the Prometheus pages (:9090/metrics) of two sets of Knative activator
// and autoscaler pods, upstream's and Thaw's, by metric family: which families only one side has, and
// for the families both have, the type and the label names of their series. Values are not compared.
//
//	metricsdiff scrape -kubeconfig K -out DIR      # DIR/activator.prom, DIR/autoscaler.prom
//	metricsdiff diff UPSTREAM_DIR THAW_DIR         # markdown on stdout
//
// lab.sh runs both on the lab.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// components are the Deployments compared, by their pods' app label.
var components = []string{"activator", "autoscaler"}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "metricsdiff:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: metricsdiff scrape|diff ...")
	}
	switch args[0] {
	case "scrape":
		fs := flag.NewFlagSet("scrape", flag.ContinueOnError)
		kc := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
		ns := fs.String("namespace", "knative-serving", "Knative Serving's namespace")
		dir := fs.String("out", "", "directory for <component>.prom")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *dir == "" {
			return errors.New("scrape: -out is required")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return scrape(ctx, *kc, *ns, *dir)
	case "diff":
		if len(args) != 3 {
			return errors.New("usage: metricsdiff diff UPSTREAM_DIR THAW_DIR")
		}
		return diffDirs(args[1], args[2], out)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// scrape fetches each component's page from one of its Running pods through the API server's pod
// proxy, so no route to the pod network is needed.
func scrape(ctx context.Context, kubeconfig, ns, dir string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, c := range components {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + c, FieldSelector: "status.phase=Running"})
		if err != nil {
			return err
		}
		pod := ""
		for _, p := range pods.Items {
			// Not one on its way out after a rollout: it is Running until it exits, but gets no traffic.
			if p.DeletionTimestamp == nil && ready(&p) {
				pod = p.Name
				break
			}
		}
		if pod == "" {
			return fmt.Errorf("no ready %s pod in %s", c, ns)
		}
		b, err := kube.CoreV1().Pods(ns).ProxyGet("http", pod, "9090", "/metrics", nil).DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%s/%s:9090/metrics: %w", ns, pod, err)
		}
		if err := os.WriteFile(filepath.Join(dir, c+".prom"), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// family is what is compared of a metric family.
type family struct {
	typ string
	// labelSets are the distinct sets of label names of its series (le and quantile excluded).
	labelSets map[string]bool
	// values are the distinct values of the labels whose values are fixed names a dashboard selects on
	// (valueLabels), as "label=value".
	values map[string]bool
}

// valueLabels name things rather than requests or revisions: their values are compared too.
var valueLabels = map[string]bool{"name": true, "peer": true, "go_memory_type": true, "otel_scope_name": true}

func parse(r io.Reader) (map[string]family, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	out := map[string]family{}
	for name, mf := range mfs {
		f := family{typ: strings.ToLower(mf.GetType().String()), labelSets: map[string]bool{}, values: map[string]bool{}}
		for _, m := range mf.GetMetric() {
			f.labelSets[labelNames(m)] = true
			for _, l := range m.GetLabel() {
				if valueLabels[l.GetName()] {
					f.values[l.GetName()+"="+l.GetValue()] = true
				}
			}
		}
		out[name] = f
	}
	return out, nil
}

func labelNames(m *dto.Metric) string {
	var names []string
	for _, l := range m.GetLabel() {
		if n := l.GetName(); n != "le" && n != "quantile" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return "{" + strings.Join(names, ",") + "}"
}

func diffDirs(upDir, thawDir string, out io.Writer) error {
	for _, c := range components {
		up, err := parseFile(filepath.Join(upDir, c+".prom"))
		if err != nil {
			return err
		}
		thaw, err := parseFile(filepath.Join(thawDir, c+".prom"))
		if err != nil {
			return err
		}
		report(c, up, thaw, out)
	}
	return nil
}

func parseFile(path string) (map[string]family, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fams, err := parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return fams, nil
}

// report writes one component's differences as markdown.
func report(component string, up, thaw map[string]family, out io.Writer) {
	var onlyUp, onlyThaw, differ []string
	same := 0
	for n, f := range up {
		t, ok := thaw[n]
		switch {
		case !ok:
			onlyUp = append(onlyUp, n+" "+f.typ+" "+sets(f))
		case t.typ != f.typ || sets(t) != sets(f):
			differ = append(differ, fmt.Sprintf("%s: upstream %s %s; Thaw %s %s", n, f.typ, sets(f), t.typ, sets(t)))
		case join(t.values) != join(f.values):
			differ = append(differ, fmt.Sprintf("%s: upstream values %s; Thaw %s", n, join(f.values), join(t.values)))
		default:
			same++
		}
	}
	for n, f := range thaw {
		if _, ok := up[n]; !ok {
			onlyThaw = append(onlyThaw, n+" "+f.typ+" "+sets(f))
		}
	}
	fmt.Fprintf(out, "## %s\n\n%d families alike, %d only upstream's, %d only Thaw's, %d differ.\n",
		component, same, len(onlyUp), len(onlyThaw), len(differ))
	for _, s := range []struct {
		title string
		lines []string
	}{{"Only upstream's", onlyUp}, {"Only Thaw's", onlyThaw}, {"Different type, label names or names in name/peer/scope labels", differ}} {
		if len(s.lines) == 0 {
			continue
		}
		sort.Strings(s.lines)
		fmt.Fprintf(out, "\n%s:\n\n", s.title)
		for _, l := range s.lines {
			fmt.Fprintf(out, "- `%s`\n", l)
		}
	}
	fmt.Fprintln(out)
}

func sets(f family) string { return join(f.labelSets) }

func join(set map[string]bool) string {
	var s []string
	for k := range set {
		s = append(s, k)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}
