// Package stack assembles the whole lab: tools (build), images, the node (cluster), CoreDNS, Knative
// Serving (knative), the ingress daemon and the optional swap. cmd/thaw only parses flags and calls it.
package stack

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/thaw-dev/thaw/pkg/lab/build"
	"github.com/thaw-dev/thaw/pkg/lab/cluster"
	"github.com/thaw-dev/thaw/pkg/lab/images"
	"github.com/thaw-dev/thaw/pkg/lab/kingress"
	"github.com/thaw-dev/thaw/pkg/lab/knative"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/proc"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

// Domain is the lab's config-domain; ksvcs answer at <name>.<namespace>.example.com.
const Domain = "example.com"

// IngressPort is where the lab's ingress listens on the bridge IP.
const IngressPort = 80

// Options configure Up.
type Options struct {
	Cache string // $THAW_CACHE
	Repo  string // checkout root; found from the working directory when empty
	Out   io.Writer
	// SkipBuild uses the cached tools as they are (fails if some are missing).
	SkipBuild bool
	// Swap swaps Thaw's activator and autoscaler in after the install.
	Swap bool
	// Autoscaler overrides config-autoscaler keys (tests shorten the scale-to-zero grace period).
	Autoscaler map[string]string
	// FastProbes shortens Knative's readiness probe periods to 1 s.
	FastProbes bool
	// Thaw is the path of the thaw binary the ingress daemon runs; default: this executable.
	Thaw string
	// ClusterDomain is the cluster's DNS domain (kubelet --cluster-domain, CoreDNS, the apiserver's
	// certificate and the ingress's internal names); default cluster.local.
	ClusterDomain string
}

// Stack is a lab with its tools resolved.
type Stack struct {
	Opts  Options
	Paths build.Paths
	Lab   *cluster.Lab
}

func (o *Options) defaults() error {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Cache == "" {
		d, err := build.DefaultCacheDir()
		if err != nil {
			return err
		}
		o.Cache = d
	}
	if o.Repo == "" {
		if r, err := build.FindRepoRoot(); err == nil {
			o.Repo = r
		}
	}
	if o.ClusterDomain != "" {
		if errs := validation.IsDNS1123Subdomain(o.ClusterDomain); len(errs) > 0 {
			return fmt.Errorf("cluster domain %q: %s", o.ClusterDomain, strings.Join(errs, "; "))
		}
	}
	return nil
}

// LabDir is the lab's state directory in the cache.
func LabDir(cache string) string { return filepath.Join(cache, "lab") }

// Config returns the lab layout for cache.
func Config(cache string) cluster.Config {
	c := cluster.DefaultConfig(LabDir(cache))
	c.PauseImage = images.PauseImage
	c.CoreDNSImage = images.CoreDNSImage
	return c
}

// ToolsFrom maps the build's paths to the cluster's tools.
func ToolsFrom(p build.Paths) cluster.Tools {
	return cluster.Tools{
		Etcd: p.Etcd, KubeAPIServer: p.KubeAPIServer, KubeControllerManager: p.KubeControllerManager,
		KubeScheduler: p.KubeScheduler, Kubelet: p.Kubelet, KubeProxy: p.KubeProxy, Kubectl: p.Kubectl,
		Containerd: p.Containerd, ContainerdShim: p.ContainerdShim, Ctr: p.Ctr, Runc: p.Runc, CNIBinDir: p.CNIBinDir,
	}
}

// Open resolves the tools (building what is missing unless SkipBuild) and returns the Stack.
func Open(ctx context.Context, o Options) (*Stack, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	bo := build.Options{CacheDir: o.Cache, RepoRoot: o.Repo, Out: o.Out}
	if o.SkipBuild {
		bo.NoInstall, bo.SkipTools, bo.SkipLocal = true, true, true
	}
	p, err := build.Ensure(ctx, bo)
	if err != nil && !o.SkipBuild {
		return nil, err
	}
	c := Config(o.Cache)
	if o.ClusterDomain != "" {
		c.ClusterDomain = o.ClusterDomain
	}
	return &Stack{Opts: o, Paths: p, Lab: cluster.New(c, ToolsFrom(p), o.Out)}, nil
}

// OpenExisting returns a Stack for commands that only stop or inspect the lab: no build, best-effort paths.
func OpenExisting(ctx context.Context, o Options) *Stack {
	_ = o.defaults()
	p, _ := build.Ensure(ctx, build.Options{CacheDir: o.Cache, RepoRoot: o.Repo, NoInstall: true, SkipTools: true, SkipLocal: true})
	return &Stack{Opts: o, Paths: p, Lab: cluster.New(Config(o.Cache), ToolsFrom(p), o.Out)}
}

func (s *Stack) logf(format string, args ...any) {
	fmt.Fprintf(s.Opts.Out, "lab: "+format+"\n", args...)
}

// Up brings the whole lab up and returns once the node is Ready and CoreDNS and Knative are available.
func (s *Stack) Up(ctx context.Context) error {
	t0 := time.Now()
	if s.Opts.Swap && len(s.Paths.ThawSkipped) > 0 {
		return fmt.Errorf("--swap: Thaw's components are not built: %v", s.Paths.ThawSkipped)
	}
	var refs []images.ImageRef
	if !s.Opts.SkipBuild {
		var err error
		refs, err = images.BuildAll(ctx, s.Paths, filepath.Join(s.Opts.Cache, "images"))
		if err != nil {
			return fmt.Errorf("images: %w", err)
		}
		s.logf("images built (%s)", since(t0))
	}
	imp := func(ctx context.Context, sock string) error {
		if refs == nil {
			return nil
		}
		return images.ImportAll(ctx, s.Paths.Ctr, sock, refs, s.Opts.Out)
	}
	if err := s.Lab.StartNode(ctx, imp); err != nil {
		return err
	}
	if err := s.Lab.StartAddons(ctx); err != nil {
		return fmt.Errorf("%w\n%s", err, s.podDiagnostics(ctx, "kube-system"))
	}
	cl, err := s.Lab.Client()
	if err != nil {
		return err
	}
	dirs, err := knative.ResolveModuleDirs(ctx, s.Opts.Repo)
	if err != nil {
		return err
	}
	tk := time.Now()
	// Zero initial scale lets a new ksvc start cold (the demo's first request is a cold start).
	as := map[string]string{"allow-zero-initial-scale": "true"}
	for k, v := range s.Opts.Autoscaler {
		as[k] = v
	}
	// A second `up` re-applies the manifests: keep a swap in place instead of reverting it.
	imageOf := images.KnativeImage
	if cur, err := swap.Current(ctx, cl.Kube); err == nil {
		imageOf = func(c string) string {
			if img, ok := cur[c]; ok {
				return img
			}
			return images.KnativeImage(c)
		}
	}
	ko := knative.Options{
		ModuleDirs:   dirs,
		Image:        imageOf,
		Domain:       Domain,
		IngressClass: kingress.IngressClass,
		Autoscaler:   as,
		FastProbes:   s.Opts.FastProbes,
	}
	objs, err := knative.Manifests(ko)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := cl.Apply(actx, objs); err != nil {
		return err
	}
	if err := s.StartIngress(); err != nil {
		return err
	}
	if err := cl.WaitDeployments(actx, knative.Namespace, knative.Deployments...); err != nil {
		return fmt.Errorf("%w\n%s", err, s.podDiagnostics(ctx, knative.Namespace))
	}
	s.logf("Knative Serving available (%s)", since(tk))
	if s.Opts.Swap {
		if err := s.Swap(ctx, ThawImages()); err != nil {
			return err
		}
	}
	fmt.Fprintf(s.Opts.Out, "lab: up in %s\n", since(t0))
	return nil
}

// IngressAddr is the host address of the ingress proxy.
func (s *Stack) IngressAddr() string {
	return fmt.Sprintf("%s:%d", s.Lab.Cfg.BridgeIP, IngressPort)
}

// StartIngress starts `thaw lab ingress` as a lab daemon.
func (s *Stack) StartIngress() error {
	bin := s.Opts.Thaw
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		bin = exe
	}
	// A copy in the lab directory outlives a `go run` or test binary's temporary directory.
	dst := filepath.Join(s.Lab.Cfg.Dir, "bin", "thaw")
	if bin != dst {
		if err := copyFile(bin, dst); err != nil {
			return fmt.Errorf("copy thaw binary: %w", err)
		}
	}
	_, err := s.Lab.Procs.Start(proc.Spec{Name: cluster.Ingress, Path: dst, Args: []string{
		"lab", "ingress", "--kubeconfig", s.Lab.Cfg.Kubeconfig(), "--listen", s.IngressAddr(),
		"--cluster-domain", s.Lab.Cfg.ClusterDomain}})
	return err
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(dst); err == nil && string(old) == string(b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// ThawImages are Thaw's activator and autoscaler images.
func ThawImages() swap.Images {
	return swap.Images{"activator": images.ThawImage("activator"), "autoscaler": images.ThawImage("autoscaler")}
}

// UpstreamImages are upstream's activator and autoscaler images as the lab installs them.
func UpstreamImages() swap.Images {
	return swap.Images{"activator": images.KnativeImage("activator"), "autoscaler": images.KnativeImage("autoscaler")}
}

// Swap sets the two images and waits for the rollout.
func (s *Stack) Swap(ctx context.Context, im swap.Images) error {
	cl, err := s.Lab.Client()
	if err != nil {
		return err
	}
	// An image the node does not hold would stall the rollout (the old pods keep serving): say so now.
	if s.Paths.Ctr != "" {
		if have, err := images.List(ctx, s.Paths.Ctr, s.Lab.Cfg.ContainerdSock()); err == nil {
			for c, img := range im {
				if _, ok := have[img]; !ok {
					return fmt.Errorf("swap %s: image %s is not in the node's containerd (built and imported by `thaw lab up`?)", c, img)
				}
			}
		}
	}
	t0 := time.Now()
	if err := swap.Apply(ctx, cl.Kube, im, 3*time.Minute); err != nil {
		return fmt.Errorf("%w\n%s", err, s.podDiagnostics(ctx, knative.Namespace))
	}
	s.logf("activator=%s autoscaler=%s rolled out (%s)", im["activator"], im["autoscaler"], since(t0))
	return nil
}

// Down tears the lab down.
func (s *Stack) Down(ctx context.Context) error { return s.Lab.Down(ctx) }

// Status describes the daemons and, when the apiserver answers, nodes and system pods.
func (s *Stack) Status(ctx context.Context) string {
	var b strings.Builder
	fmt.Fprintf(&b, "lab directory: %s\nkubeconfig:    %s\ningress:       http://%s\n", s.Lab.Cfg.Dir, s.Lab.Cfg.Kubeconfig(), s.IngressAddr())
	for _, n := range append(append([]string{}, cluster.Daemons...), cluster.Ingress) {
		pid, ok := s.Lab.Procs.Alive(n)
		state := "stopped"
		if ok {
			state = fmt.Sprintf("running (pid %d)", pid)
		}
		fmt.Fprintf(&b, "  %-24s %s\n", n, state)
	}
	if _, ok := s.Lab.Procs.Alive(cluster.APIServer); !ok {
		return b.String()
	}
	cl, err := s.Lab.Client()
	if err != nil {
		return b.String()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b.WriteString(kube.Summary(ctx, cl, "kube-system", knative.Namespace))
	if im, err := swap.Current(ctx, cl.Kube); err == nil {
		fmt.Fprintf(&b, "swap: activator=%s autoscaler=%s\n", im["activator"], im["autoscaler"])
	}
	return b.String()
}

// Diagnostics returns, for each namespace, pod states, events and container logs, then the tails of the
// lab daemons' logs: what a failure message needs.
func (s *Stack) Diagnostics(ctx context.Context, namespaces ...string) string {
	var b strings.Builder
	for _, ns := range namespaces {
		b.WriteString(s.podDiagnostics(ctx, ns))
	}
	for _, d := range append(append([]string{}, cluster.Daemons...), cluster.Ingress) {
		fmt.Fprintf(&b, "--- %s log (last lines) ---\n%s\n", d, s.Lab.Procs.Tail(d, 20))
	}
	return b.String()
}

// podDiagnostics returns pod states, events and the daemon log tails for a failure message.
func (s *Stack) podDiagnostics(ctx context.Context, ns string) string {
	cl, err := s.Lab.Client()
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var b strings.Builder
	b.WriteString(kube.Summary(ctx, cl, ns))
	b.WriteString(kube.Events(ctx, cl, ns, 20))
	b.WriteString(kube.Logs(ctx, cl, ns, 15))
	for _, d := range []string{cluster.Kubelet, cluster.Containerd} {
		fmt.Fprintf(&b, "--- %s log (last lines) ---\n%s\n", d, s.Lab.Procs.Tail(d, 15))
	}
	return b.String()
}

func since(t time.Time) string { return time.Since(t).Round(10 * time.Millisecond).String() }
